"""HTML mail bodies: safe HTML for display (nh3) and readable plain text."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import nh3

_ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "center", "code", "col", "colgroup", "dd", "div",
    "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "li", "ol", "p",
    "pre", "s", "small", "span", "strike", "strong", "sub", "sup", "table", "tbody", "td", "tfoot",
    "th", "thead", "tr", "u", "ul",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {
    "*": {"title", "align", "dir", "lang"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan", "valign", "width"},
    "th": {"colspan", "rowspan", "valign", "width"},
    "table": {"width", "cellpadding", "cellspacing", "border"},
    "font": {"color", "size"},
    "blockquote": {"type", "cite"},
    "ol": {"start", "type"},
}
_URL_SCHEMES = {"http", "https", "mailto", "cid", "tel"}

_BLOCK = {
    "p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote",
    "pre", "hr", "dl", "dt", "dd", "section", "article", "header", "footer", "address", "center", "title",
}  # fmt: skip
_SKIP = {"script", "style", "head", "title", "xml", "template", "noscript", "svg", "object", "iframe"}
_MAX_HTML = 5_000_000


def safe_html(source: str) -> str:
    """HTML with scripts, handlers, styles and foreign URL schemes removed; cid: images kept."""
    try:
        return nh3.clean(
            source[:_MAX_HTML],
            tags=_ALLOWED_TAGS,
            attributes=_ALLOWED_ATTRIBUTES,
            url_schemes=_URL_SCHEMES,
            link_rel="noopener noreferrer nofollow",
            strip_comments=True,
        )
    except Exception:
        return html.escape(source[:_MAX_HTML])


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip_depth = 0
        self.quote_depth = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip_depth += 1
            return
        if tag == "blockquote":
            self.quote_depth += 1
        if tag == "pre":
            self.pre += 1
        if tag == "li":
            self.out.append("\n- ")
        elif tag == "br":
            self.out.append("\n")
        elif tag in _BLOCK:
            self.out.append("\n")
        elif tag in ("td", "th"):
            self.out.append(" ")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.out.append(f"[{alt}]")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in _SKIP:
            self.skip_depth -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if tag == "blockquote":
            self.quote_depth = max(0, self.quote_depth - 1)
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in _BLOCK and tag != "br":
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
        if self.quote_depth:
            data = data.replace("\n", "\n" + "> " * self.quote_depth)
            if self.out and self.out[-1].endswith("\n"):
                data = "> " * self.quote_depth + data.lstrip()
        self.out.append(data)


def html_to_text(source: str) -> str:
    """Readable text of an HTML body (block structure kept, blockquotes marked with '>')."""
    parser = _TextExtractor()
    try:
        parser.feed(source[:_MAX_HTML])
        parser.close()
    except Exception:
        return re.sub(r"<[^>]*>", " ", source[:_MAX_HTML])
    text = "".join(parser.out).replace("\xa0", " ")
    lines = [line.rstrip() for line in text.split("\n")]
    lines = [line[1:] if line.startswith(" ") and not line.startswith("  ") else line for line in lines]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
