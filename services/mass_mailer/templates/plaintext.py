"""The plain-text part of a mail, derived from its HTML (merge tags pass through untouched)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCK = frozenset(
    "address article aside blockquote center dd div dl dt footer h1 h2 h3 h4 h5 h6 header hr li "
    "main nav ol p pre section table tbody thead tfoot tr ul".split()
)
_SKIP = frozenset({"head", "style", "script", "title", "template"})
_HIDDEN = re.compile(r"display\s*:\s*none|mso-hide\s*:\s*all", re.I)
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
_CONDITIONAL = re.compile(r"<!--\[if[^\]]*\]>.*?<!\[endif\]-->", re.S | re.I)


class _TextBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.stack: list[tuple[str, bool, str | None]] = []  # (tag, hidden, href)
        self.hidden_depth = 0

    @property
    def hidden(self) -> bool:
        return self.hidden_depth > 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        hides = tag in _SKIP or bool(_HIDDEN.search(values.get("style", "")))
        if tag in _VOID:
            if not self.hidden:
                if tag == "br":
                    self.parts.append("\n")
                elif tag == "hr":
                    self.parts.append("\n" + "-" * 40 + "\n")
                elif tag == "img" and values.get("alt", "").strip():
                    self.parts.append(f" {values['alt'].strip()} ")
            return
        if hides:
            self.hidden_depth += 1
        if not self.hidden and tag in _BLOCK:
            self.parts.append("\n")
        if not self.hidden and tag == "li":
            self.parts.append("- ")
        self.stack.append((tag, hides, values.get("href") if tag == "a" else None))
        if not self.hidden and tag == "a":
            self.parts.append("\x00")  # where the link text starts

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            name, hides, href = self.stack.pop()
            if name == "a" and not self.hidden:
                self._close_link(href)
            if hides:
                self.hidden_depth -= 1
            if not self.hidden and name in _BLOCK:
                self.parts.append("\n")
            if name == tag:
                break

    def _close_link(self, href: str | None) -> None:
        start = max(i for i, p in enumerate(self.parts) if p == "\x00") if "\x00" in self.parts else None
        if start is None:
            return
        text = "".join(self.parts[start + 1 :]).strip()
        del self.parts[start:]
        label = " ".join(text.split())
        if href and not href.startswith("#") and href != label:
            self.parts.append(f"{label} ({href})" if label else href)
        else:
            self.parts.append(label)

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(markup: str) -> str:
    """Readable text: block elements on their own lines, links as ``text (url)``."""
    builder = _TextBuilder()
    builder.feed(_CONDITIONAL.sub("", markup))
    builder.close()
    raw = "".join(p for p in builder.parts if p != "\x00")
    lines = [" ".join(line.split()) for line in raw.split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
