"""MJML-JSON designs for tests and benches: one section, one column, the given blocks."""

from __future__ import annotations

from typing import Any


def text(content: str, **attributes: str) -> dict[str, Any]:
    return {"tagName": "mj-text", "attributes": attributes, "content": content}


def one_column(*blocks: dict[str, Any]) -> dict[str, Any]:
    column = {"tagName": "mj-column", "attributes": {}, "children": list(blocks)}
    section = {"tagName": "mj-section", "attributes": {}, "children": [column]}
    body = {"tagName": "mj-body", "attributes": {}, "children": [section]}
    return {"tagName": "mjml", "attributes": {}, "children": [body]}
