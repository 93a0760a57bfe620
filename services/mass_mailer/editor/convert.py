"""Lossless conversion between our MJML-JSON designs and the MJML text the editor works on.

The editor (GrapesJS + grapesjs-mjml) imports and exports MJML text. ``design_to_mjml`` writes a
validated design with ``templates.design.to_mjml``; ``mjml_to_design`` reads MJML text back with
a small strict tokenizer written for hostile input: no DTDs, no entity declarations, no
processing instructions (except a leading ``<?xml ...?>``), only HTML's predefined character
references in attribute values, size/depth/element limits, and the bytes of content tags (mj-text,
mj-button, mj-raw, mj-style ...) kept verbatim. For every validated design ``d``:
``mjml_to_design(design_to_mjml(d)) == d``.
"""

from __future__ import annotations

import html
import re
from typing import Any

from services.mass_mailer.templates.content import DesignError
from services.mass_mailer.templates.design import (
    ENDING_TAGS,
    MAX_DEPTH,
    MAX_NODES,
    TEXT_CONTENT_TAGS,
    to_mjml,
    validate_design,
)

MAX_MJML_CHARS = 2_000_000
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]*")
_ATTRIBUTE = re.compile(r"""([A-Za-z_:][A-Za-z0-9_.:-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_SPACE = re.compile(r"\s*")
_XML_DECLARATION = re.compile(r"<\?xml\s[^<>?]*\?>")


def design_to_mjml(design: Any) -> str:
    """Validate a design and write it as MJML text (raises DesignError)."""
    return to_mjml(validate_design(design))


def mjml_to_design(text: str) -> dict[str, Any]:
    """Read MJML text into a validated MJML-JSON design (raises DesignError)."""
    return validate_design(parse_mjml(text))


def _line(text: str, pos: int) -> str:
    return f"line {text.count(chr(10), 0, pos) + 1}"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.nodes = 0

    def fail(self, message: str, pos: int | None = None) -> DesignError:
        return DesignError(message, f"MJML {_line(self.text, self.pos if pos is None else pos)}")

    def skip_space_and_comments(self) -> None:
        text = self.text
        while True:
            self.pos = _SPACE.match(text, self.pos).end()  # type: ignore[union-attr]
            if not text.startswith("<!--", self.pos):
                return
            end = text.find("-->", self.pos + 4)
            if end < 0:
                raise self.fail("unterminated comment")
            self.pos = end + 3  # comments between elements carry nothing for a design

    def element(self, depth: int) -> dict[str, Any]:
        text, start = self.text, self.pos
        if depth > MAX_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_DEPTH} levels")
        if text.startswith("<!", start):
            raise self.fail("declarations (DOCTYPE, ENTITY, CDATA) are not allowed")
        if text.startswith("<?", start):
            raise self.fail("processing instructions are not allowed")
        if not text.startswith("<", start) or text.startswith("</", start):
            raise self.fail("expected an element")
        name_match = _NAME.match(text, start + 1)
        if name_match is None:
            raise self.fail("expected a tag name")
        tag = name_match.group()
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(f"more than {MAX_NODES} elements")
        self.pos = name_match.end()
        attributes: dict[str, str] = {}
        while True:
            gap = _SPACE.match(text, self.pos).end()  # type: ignore[union-attr]
            if text.startswith("/>", gap) or text.startswith(">", gap):
                self.pos = gap
                break
            attribute = _ATTRIBUTE.match(text, gap)
            if attribute is None or gap == self.pos:
                raise self.fail(f"malformed attribute in <{tag}> (attributes need quoted values)")
            name = attribute.group(1)
            raw = attribute.group(2) if attribute.group(2) is not None else attribute.group(3)
            if name in attributes:
                raise self.fail(f"attribute '{name}' repeated in <{tag}>")
            if "<" in raw:
                raise self.fail(f"'<' in the value of attribute '{name}' (write &lt;)")
            attributes[name] = html.unescape(raw)
            self.pos = attribute.end()
        self_closing = text.startswith("/>", self.pos)
        self.pos += 2 if self_closing else 1
        if tag in ENDING_TAGS:
            content = ""
            if not self_closing:
                closing = re.compile(rf"</{re.escape(tag)}\s*>").search(text, self.pos)
                if closing is None:
                    raise self.fail(f"<{tag}> is not closed", start)
                content = text[self.pos : closing.start()]
                self.pos = closing.end()
            if tag in TEXT_CONTENT_TAGS:
                if "<" in content:
                    raise self.fail(f"<{tag}> holds plain text only", start)
                content = html.unescape(content)
            return {"tagName": tag, "attributes": attributes, "content": content}
        children: list[dict[str, Any]] = []
        if not self_closing:
            while True:
                self.skip_space_and_comments()
                if self.pos >= len(text):
                    raise self.fail(f"<{tag}> is not closed", start)
                if text.startswith("</", self.pos):
                    end = re.compile(r"</([A-Za-z][A-Za-z0-9_.:-]*)\s*>").match(text, self.pos)
                    if end is None or end.group(1) != tag:
                        raise self.fail(f"expected </{tag}>")
                    self.pos = end.end()
                    break
                if not text.startswith("<", self.pos):
                    raise self.fail(f"text is only allowed inside content tags, not in <{tag}>")
                children.append(self.element(depth + 1))
        return {"tagName": tag, "attributes": attributes, "children": children}


def parse_mjml(text: str) -> dict[str, Any]:
    """MJML text -> MJML-JSON, structure only (``validate_design`` checks the rest)."""
    if not isinstance(text, str):
        raise DesignError("MJML must be text")
    if len(text) > MAX_MJML_CHARS:
        raise DesignError(f"MJML longer than {MAX_MJML_CHARS:,} characters")
    parser = _Parser(text)
    parser.pos = _SPACE.match(text).end()  # type: ignore[union-attr]
    declaration = _XML_DECLARATION.match(text, parser.pos)
    if declaration:
        parser.pos = declaration.end()
    parser.skip_space_and_comments()
    root = parser.element(0)
    parser.skip_space_and_comments()
    if parser.pos != len(text):
        raise parser.fail("content after the root element")
    if root["tagName"] != "mjml":
        raise DesignError("the root element must be <mjml>")
    return root
