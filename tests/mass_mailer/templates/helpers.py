"""Designs for the template tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

DESIGNS = Path(__file__).parent / "designs"


def newsletter() -> dict[str, Any]:
    return json.loads((DESIGNS / "newsletter.json").read_text())


def with_body(*nodes: dict[str, Any], head: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A minimal design: one section, one column holding ``nodes``."""
    children: list[dict[str, Any]] = []
    if head is not None:
        children.append({"tagName": "mj-head", "attributes": {}, "children": head})
    column = {"tagName": "mj-column", "attributes": {}, "children": list(nodes)}
    section = {"tagName": "mj-section", "attributes": {}, "children": [column]}
    children.append({"tagName": "mj-body", "attributes": {}, "children": [section]})
    return {"tagName": "mjml", "attributes": {}, "children": children}


def text(content: str, **attrs: str) -> dict[str, Any]:
    return {"tagName": "mj-text", "attributes": dict(attrs), "content": content}


def element(tag: str, content: str | None = None, **attrs: str) -> dict[str, Any]:
    node: dict[str, Any] = {"tagName": tag, "attributes": {k.replace("_", "-"): v for k, v in attrs.items()}}
    if content is not None:
        node["content"] = content
    return node


def deep(design: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(design)
