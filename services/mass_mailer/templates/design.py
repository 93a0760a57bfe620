"""MJML-JSON designs (``{tagName, attributes, children | content}``): allowlist validation,
normalisation around the MJML port's known bugs, and serialisation to MJML XML with escaping.

The attribute allowlist per tag is the MJML port's own ``allowed_attrs`` (plus ``css-class`` and
``mj-class``); tags outside the list (``mj-include``, ``mj-html-attributes``, anything unknown) are
rejected. Content tags hold HTML that must pass ``content.check_html``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from typing import Any
from xml.sax.saxutils import escape

from bs4 import BeautifulSoup, Comment, Tag

from services.mass_mailer.templates.content import (
    MERGE_OPEN,
    DesignError,
    check_css,
    check_html,
    check_plain_value,
    check_url,
)

MAX_DEPTH = 30
MAX_NODES = 5_000
MAX_DESIGN_BYTES = 1_000_000
MAX_CONTENT = 200_000
MAX_ATTRIBUTES = 60

HTML_CONTENT_TAGS = frozenset(
    {
        "mj-text",
        "mj-button",
        "mj-table",
        "mj-raw",
        "mj-navbar-link",
        "mj-social-element",
        "mj-accordion-title",
        "mj-accordion-text",
    }
)
TEXT_CONTENT_TAGS = frozenset({"mj-title", "mj-preview"})
CSS_CONTENT_TAGS = frozenset({"mj-style"})
ENDING_TAGS = HTML_CONTENT_TAGS | TEXT_CONTENT_TAGS | CSS_CONTENT_TAGS
HEAD_TAGS = frozenset(
    {"mj-attributes", "mj-breakpoint", "mj-font", "mj-preview", "mj-style", "mj-title", "mj-raw"}
)
URL_ATTRS = frozenset(
    {
        "href",
        "src",
        "background-url",
        "thumbnails-src",
        "icon-wrapped-url",
        "icon-unwrapped-url",
        "left-icon",
        "right-icon",
    }
)
MERGE_OK_ATTRS = frozenset({"alt", "title"})
ROOT_ATTRS = {"lang": "string", "dir": "enum(ltr,rtl,auto)", "owa": "string", "version": "string"}
EXTRA_ATTRS = {"css-class": "string", "mj-class": "string"}
EXTRA_TAG_ATTRS = {"mj-style": {"inline": "enum(inline)"}, "mj-class": {"name": "string"}}
# The Python port registers these fonts itself; an mj-font reusing the name crashes it.
DEFAULT_FONTS = {
    "Open Sans": "https://fonts.googleapis.com/css?family=Open+Sans:300,400,500,700",
    "Droid Sans": "https://fonts.googleapis.com/css?family=Droid+Sans:300,400,500,700",
    "Lato": "https://fonts.googleapis.com/css?family=Lato:300,400,500,700",
    "Roboto": "https://fonts.googleapis.com/css?family=Roboto:300,400,500,700",
    "Ubuntu": "https://fonts.googleapis.com/css?family=Ubuntu:300,400,500,700",
}
_FRACTIONAL_PX = re.compile(r"^\s*(\d+)\.(\d+)\s*(px)?\s*$")
_CLASS_NAMES = re.compile(r"^[A-Za-z0-9_\- ]*$")


@cache
def allowed_attributes() -> dict[str, dict[str, str]]:
    """tag -> {attribute: MJML type} for every tag a design may use."""
    from mjml.core.registry import components, register_core_components

    register_core_components()
    table: dict[str, dict[str, str]] = {}
    for name, component in components.items():
        if name in ("mj-html-attributes",):
            continue
        defaults = component.default_attrs() if hasattr(component, "default_attrs") else {}
        attrs = {k: "string" for k in defaults}
        attrs.update(component.allowed_attrs() if hasattr(component, "allowed_attrs") else {})
        table[name] = {k: v or "string" for k, v in attrs.items()} | EXTRA_ATTRS
    table["mjml"] = dict(ROOT_ATTRS)
    union: dict[str, str] = {}
    for attrs in table.values():
        union.update(attrs)
    table["mj-all"] = union
    table["mj-class"] = union | EXTRA_TAG_ATTRS["mj-class"]
    table["mj-style"] = table.get("mj-style", {}) | EXTRA_TAG_ATTRS["mj-style"]
    return table


def _check_attribute(tag: str, name: str, raw: Any, kind: str, where: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise DesignError(f"attribute '{name}' must be a string or a number", where)
    value = str(raw)
    if len(value) > 4_000:
        raise DesignError(f"attribute '{name}' is too long", where)
    at = f"{where}@{name}"
    if tag == "mj-font" and MERGE_OPEN.search(value):
        raise DesignError("merge tags are not allowed in mj-font", at)
    if name in URL_ATTRS or (tag == "mj-font" and name == "href"):
        check_url(value, allow_data_image=name in ("src", "thumbnails-src"), where=at)
    elif name in ("css-class", "mj-class") and not _CLASS_NAMES.match(value):
        raise DesignError("class names may contain letters, digits, '_' and '-' only", at)
    else:
        check_plain_value(value, at, merge_ok=name in MERGE_OK_ATTRS)
    if kind.startswith("enum(") and tag not in ("mj-all", "mj-class"):
        options = kind[5:-1].split(",")
        if value not in options:
            raise DesignError(f"must be one of {', '.join(options)}", at)
    return value


def _normalise_attributes(tag: str, attrs: dict[str, str]) -> dict[str, str]:
    # The port writes fractional widths verbatim into width="" (npm mjml rounds them down).
    if tag in ("mj-image", "mj-carousel-image"):
        for name in ("width", "height"):
            match = _FRACTIONAL_PX.match(attrs.get(name, ""))
            if match:
                attrs[name] = f"{match.group(1)}{match.group(3) or ''}"
    return attrs


HEAD_ONLY_TAGS = HEAD_TAGS - {"mj-raw"}


def _check_placement(tag: str, parent: str | None, where: str) -> None:
    if (tag == "mjml") != (parent is None):
        raise DesignError("mjml must be the root element, and only the root", where)
    if tag in ("mj-head", "mj-body") and parent != "mjml":
        raise DesignError(f"<{tag}> belongs directly in <mjml>", where)
    if tag in HEAD_ONLY_TAGS and parent != "mj-head":
        raise DesignError(f"<{tag}> belongs in <mj-head>", where)
    if parent == "mj-attributes" and tag in HEAD_ONLY_TAGS | {"mjml", "mj-head", "mj-body"}:
        raise DesignError(f"<{tag}> cannot carry default attributes", where)


class _Walker:
    def __init__(self) -> None:
        self.nodes = 0
        self.fonts: dict[str, str] = {}

    def node(
        self, raw: Any, path: str, depth: int, parent: str | None, index: int | None = None
    ) -> dict[str, Any] | None:
        if depth > MAX_DEPTH:
            raise DesignError(f"nesting deeper than {MAX_DEPTH} levels", path)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise DesignError(f"more than {MAX_NODES} elements")
        if not isinstance(raw, Mapping):
            raise DesignError("every element must be an object {tagName, attributes, children|content}", path)
        unknown = set(raw) - {
            "tagName",
            "attributes",
            "children",
            "content",
            "line",
            "file",
            "absoluteFilePath",
            "includedIn",
        }
        if unknown:
            raise DesignError(f"unknown keys {sorted(unknown)}", path)
        tag = raw.get("tagName")
        if not isinstance(tag, str):
            raise DesignError("tagName must be a string", path)
        here = (f"{path}/" if path else "") + (f"{tag}[{index}]" if index is not None else tag)
        if tag == "mj-include":
            raise DesignError("mj-include is not allowed (designs must be self-contained)", here)
        table = allowed_attributes()
        parent_allows_defaults = parent == "mj-attributes"
        if tag not in table or (tag in ("mj-all", "mj-class") and not parent_allows_defaults):
            raise DesignError(f"tag <{tag}> is not allowed", here)
        attrs_raw = raw.get("attributes", {})
        attrs_raw = {} if attrs_raw is None else attrs_raw
        if not isinstance(attrs_raw, Mapping) or len(attrs_raw) > MAX_ATTRIBUTES:
            raise DesignError(f"attributes must be an object with at most {MAX_ATTRIBUTES} entries", here)
        _check_placement(tag, parent, here)
        allowed = table[tag]
        attrs: dict[str, str] = {}
        for name, value in attrs_raw.items():
            if not isinstance(name, str) or name not in allowed:
                raise DesignError(f"attribute '{name}' is not allowed on <{tag}>", here)
            attrs[name] = _check_attribute(tag, name, value, allowed[name], here)
        if tag == "mj-section" and "border-radius" in attrs:
            raise DesignError(
                "border-radius on mj-section is rendered wrongly; put it on mj-column or mj-wrapper", here
            )
        if tag == "mj-style":
            attrs.pop("inline", None)  # no CSS inliner here: inline styles stay in the head
        attrs = _normalise_attributes(tag, attrs)
        node: dict[str, Any] = {"tagName": tag, "attributes": attrs}
        if tag == "mj-font":
            name, href = attrs.get("name", ""), attrs.get("href", "")
            if not name or not href:
                raise DesignError("mj-font needs name and href", here)
            if name in self.fonts:
                raise DesignError(f"font '{name}' is declared twice", here)
            self.fonts[name] = href
        if tag in ENDING_TAGS:
            if raw.get("children"):
                raise DesignError(f"<{tag}> takes content, not children", here)
            content = raw.get("content", "")
            if not isinstance(content, str):
                raise DesignError("content must be a string", here)
            if len(content) > MAX_CONTENT:
                raise DesignError(f"content longer than {MAX_CONTENT} characters", here)
            if tag in HTML_CONTENT_TAGS:
                check_html(content, here)
            elif tag in CSS_CONTENT_TAGS:
                check_css(content, here)
            elif "<" in content:
                raise DesignError("plain text only (no markup)", here)
            node["content"] = content
            return node
        if raw.get("content") not in (None, ""):
            raise DesignError(f"<{tag}> takes children, not content", here)
        children = raw.get("children") or []
        if not isinstance(children, list):
            raise DesignError("children must be a list", here)
        node["children"] = [
            child
            for i, item in enumerate(children)
            if (child := self.node(item, here, depth + 1, tag, i)) is not None
        ]
        return node


def validate_design(design: Any) -> dict[str, Any]:
    """Return the validated, normalised design or raise DesignError."""
    try:
        size = len(json.dumps(design))
    except (TypeError, ValueError) as exc:
        raise DesignError(f"design is not JSON data: {exc}") from exc
    except RecursionError as exc:
        raise DesignError(f"nesting deeper than {MAX_DEPTH} levels") from exc
    if size > MAX_DESIGN_BYTES:
        raise DesignError(f"design larger than {MAX_DESIGN_BYTES} bytes")
    if not isinstance(design, Mapping) or design.get("tagName") != "mjml":
        raise DesignError('the root element must be {"tagName": "mjml", ...}')
    walker = _Walker()
    root = walker.node(design, "", 0, None)
    assert root is not None
    names = [c["tagName"] for c in root["children"]]
    if names.count("mj-body") != 1 or names.count("mj-head") > 1 or set(names) - {"mj-head", "mj-body"}:
        raise DesignError("mjml must contain one mj-body and at most one mj-head")
    for child in root["children"]:
        if child["tagName"] == "mj-head":
            for item in child["children"]:
                if item["tagName"] not in HEAD_TAGS:
                    raise DesignError(f"<{item['tagName']}> does not belong in mj-head", "mjml/mj-head")
    return root


def default_font_overrides(design: Mapping[str, Any]) -> dict[str, str]:
    """mj-font elements that reuse a default font name: name -> the design's href."""
    found: dict[str, str] = {}
    for head in design.get("children", []):
        if head["tagName"] != "mj-head":
            continue
        for item in head["children"]:
            name = item["attributes"].get("name", "")
            if item["tagName"] == "mj-font" and name in DEFAULT_FONTS:
                found[name] = item["attributes"]["href"]
    return found


def without_default_fonts(design: dict[str, Any]) -> dict[str, Any]:
    """The design minus mj-fonts reusing a default name (render.py swaps their URL in)."""

    def keep(node: dict[str, Any]) -> bool:
        return not (node["tagName"] == "mj-font" and node["attributes"].get("name") in DEFAULT_FONTS)

    out = dict(design)
    out["children"] = [
        {**c, "children": [x for x in c["children"] if keep(x)]} if c["tagName"] == "mj-head" else c
        for c in design["children"]
    ]
    return out


def with_preheader(design: dict[str, Any], preheader: str) -> dict[str, Any]:
    """The design with its mj-preview replaced by ``preheader`` (none if empty)."""
    children = list(design["children"])
    head = next((c for c in children if c["tagName"] == "mj-head"), None)
    items = [c for c in (head["children"] if head else []) if c["tagName"] != "mj-preview"]
    if preheader:
        items.append({"tagName": "mj-preview", "attributes": {}, "content": preheader})
    new_head = {"tagName": "mj-head", "attributes": {}, "children": items}
    if head is None:
        children.insert(0, new_head)
    else:
        children[children.index(head)] = {**head, "children": items}
    return {**design, "children": children}


def _attr(value: str) -> str:
    return escape(value, {'"': "&quot;"})


def to_mjml(node: Mapping[str, Any]) -> str:
    """Serialise a *validated* design to MJML XML (attribute values and text escaped)."""
    tag = node["tagName"]
    attrs = "".join(f' {name}="{_attr(value)}"' for name, value in node["attributes"].items())
    if tag in HTML_CONTENT_TAGS or tag in CSS_CONTENT_TAGS:
        inner = node.get("content", "")  # validated markup / CSS, kept verbatim
    elif tag in TEXT_CONTENT_TAGS:
        inner = escape(node.get("content", ""))
    else:
        inner = "".join(to_mjml(child) for child in node.get("children", []))
    return f"<{tag}{attrs}>{inner}</{tag}>"


def design_from_mjml(xml: str) -> dict[str, Any]:
    """Parse MJML XML into MJML-JSON, the way the MJML port reads it (comments -> mj-raw)."""
    soup = BeautifulSoup(xml, "html.parser", multi_valued_attributes=None)
    root = soup.find("mjml")
    if not isinstance(root, Tag):
        raise DesignError("no <mjml> root element")

    def convert(tag: Tag) -> dict[str, Any]:
        node: dict[str, Any] = {"tagName": tag.name, "attributes": {k: str(v) for k, v in tag.attrs.items()}}
        if tag.name in TEXT_CONTENT_TAGS:
            node["content"] = tag.get_text().strip()
            return node
        if tag.name in ENDING_TAGS:
            node["content"] = tag.decode_contents().strip()
            return node
        children: list[dict[str, Any]] = []
        for child in tag.children:
            if isinstance(child, Comment):
                children.append({"tagName": "mj-raw", "attributes": {}, "content": f"<!--{child}-->"})
            elif isinstance(child, Tag):
                children.append(convert(child))
        node["children"] = children
        return node

    return convert(root)
