"""Checks for the hostile parts of a design: URLs, CSS, and the HTML inside content tags.

Nothing here rewrites input: a value is accepted as is or rejected with a message that says
where and why (``DesignError``). The MJML port copies attribute values into the HTML without
escaping them, so values must be safe verbatim.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

MERGE_OPEN = re.compile(r"\{[{%#]")
BUILTIN_LINK_TAG = re.compile(r"^\{\{\s*links\.(unsubscribe|online_view|survey|calendar)\s*\}\}$")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):")
_SAFE_SCHEMES = {"http", "https", "mailto", "tel", "sms"}
_DATA_IMAGE = re.compile(r"^data:image/(png|gif|jpeg|webp);base64,[A-Za-z0-9+/=\s]+$")
# A merge tag may follow a fixed prefix only: the contact's data never picks the scheme or host.
_MERGE_URL_PREFIX = re.compile(r"^(https?://[A-Za-z0-9.\-]+(:\d+)?[/?#]|mailto:|tel:|/|#)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BAD_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CSS_BAD = re.compile(
    r"expression\s*\(|javascript:|vbscript:|behavior\s*:|-moz-binding|@import|</|<!|\\", re.I
)
_CSS_URL = re.compile(r"url\s*\(\s*['\"]?\s*([^'\")\s]*)", re.I)

MAX_URL = 4_000


class DesignError(ValueError):
    """A design (or one of its parts) is not acceptable; ``path`` says where."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.reason = message


def check_url(value: str, *, allow_data_image: bool = False, where: str = "") -> None:
    """Accept http(s)/mailto/tel/relative URLs, built-in link tags and prefixed merge tags."""
    if len(value) > MAX_URL:
        raise DesignError(f"URL longer than {MAX_URL} characters", where)
    if any(c in value for c in '"<>`\\'):
        raise DesignError('URL contains one of " < > ` \\', where)
    stripped = value.strip()
    if MERGE_OPEN.search(stripped):
        if BUILTIN_LINK_TAG.match(stripped):
            return
        if "{%" in stripped or "{#" in stripped:
            raise DesignError("only {{ ... }} merge tags are allowed in URLs", where)
        prefix = stripped[: stripped.index("{")]
        if not _MERGE_URL_PREFIX.match(prefix):
            raise DesignError(
                "a merge tag in a URL must follow a fixed https://host/, mailto: or tel: prefix "
                "(or be a built-in link like {{ links.unsubscribe }})",
                where,
            )
        return
    # Browsers decode entities and drop tabs/newlines before they look at the scheme.
    decoded = _CONTROL.sub("", html.unescape(stripped)).strip()
    scheme = _SCHEME.match(decoded)
    if scheme is None:
        if ":" in decoded.split("/", 1)[0] or ("&" in stripped and decoded != stripped):
            raise DesignError("URL with an obfuscated scheme", where)
        return
    name = scheme.group(1).lower()
    if name in _SAFE_SCHEMES:
        return
    if name == "data" and allow_data_image and _DATA_IMAGE.match(decoded):
        return
    raise DesignError(f"URL scheme '{name}:' is not allowed", where)


def check_css(value: str, where: str = "") -> None:
    """CSS from a style attribute or mj-style: no script-bearing constructs, https/http url()s."""
    if MERGE_OPEN.search(value):
        raise DesignError("merge tags are not allowed in CSS", where)
    if _CSS_BAD.search(value):
        raise DesignError(
            "CSS contains a forbidden construct (expression, javascript:, @import, </, \\)", where
        )
    if "<" in value:
        raise DesignError("CSS must not contain '<'", where)
    for match in _CSS_URL.finditer(value):
        target = match.group(1)
        if not re.match(r"^(https?:)?//", target, re.I):
            raise DesignError("CSS url() must point to an http(s) address", where)


ALLOWED_HTML_TAGS = frozenset(
    "a abbr b big blockquote br caption center cite code col colgroup dd del div dl dt em font "
    "h1 h2 h3 h4 h5 h6 hr i img ins kbd li mark ol p pre q s small span strike strong sub sup "
    "table tbody td tfoot th thead tr tt u ul wbr".split()
)
ALLOWED_HTML_ATTRS = frozenset(
    "href src alt title width height style class id align valign bgcolor background border "
    "cellpadding cellspacing colspan rowspan target rel color face size dir lang role name "
    "start type scope headers nowrap".split()
)
URL_HTML_ATTRS = frozenset({"href", "src", "background"})
MERGE_OK_HTML_ATTRS = frozenset({"href", "src", "alt", "title"})
_CONDITIONAL = re.compile(r"^\[if [^\]]*\]>|<!\[endif\]$|^<!\[endif\]|<!$|^>")


class _ContentChecker(HTMLParser):
    def __init__(self, where: str) -> None:
        super().__init__(convert_charrefs=False)
        self.where = where

    def fail(self, message: str) -> None:
        raise DesignError(message, self.where)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_HTML_TAGS:
            self.fail(f"HTML tag <{tag}> is not allowed")
        for name, value in attrs:
            if name.startswith("on"):
                self.fail(f"event handler attribute '{name}' is not allowed")
            if name not in ALLOWED_HTML_ATTRS:
                self.fail(f"HTML attribute '{name}' is not allowed on <{tag}>")
            text = value or ""
            if _BAD_CONTROL.search(text):
                self.fail(f"control characters in attribute '{name}'")
            if name in URL_HTML_ATTRS:
                check_url(text, allow_data_image=name == "src", where=f"{self.where} <{tag} {name}>")
            elif MERGE_OPEN.search(text) and name not in MERGE_OK_HTML_ATTRS:
                self.fail(f"merge tags are not allowed in attribute '{name}'")
            if name == "style":
                check_css(html.unescape(text), f"{self.where} <{tag} style>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag not in ALLOWED_HTML_TAGS:
            self.fail(f"HTML tag </{tag}> is not allowed")

    def handle_data(self, data: str) -> None:
        if "<" in data:
            self.fail("a literal '<' in text (write &lt;)")

    def handle_comment(self, data: str) -> None:
        # Outlook conditional comments carry markup: it must pass the same checks.
        inner = _CONDITIONAL.sub("", data.strip())
        if "<" in inner or ">" in inner:
            check_html(inner, self.where, allow_comments=False)

    def handle_decl(self, decl: str) -> None:
        self.fail("declarations (<!...>) are not allowed")

    def unknown_decl(self, data: str) -> None:
        self.fail("CDATA / declarations are not allowed")

    def handle_pi(self, data: str) -> None:
        self.fail("processing instructions are not allowed")


def check_html(content: str, where: str = "", *, allow_comments: bool = True) -> None:
    """Validate the HTML inside a content tag (mj-text, mj-button, mj-raw ...)."""
    if not allow_comments and "<!--" in content:
        raise DesignError("nested comments are not allowed", where)
    checker = _ContentChecker(where)
    checker.feed(content)
    checker.close()
    rest = checker.rawdata if hasattr(checker, "rawdata") else ""
    if rest.strip():
        raise DesignError("unterminated markup at the end of the content", where)


def check_plain_value(value: str, where: str, *, merge_ok: bool = False) -> None:
    """A non-URL attribute value: it may end up in a style attribute, so no CSS breakout."""
    if _CONTROL.search(value):
        raise DesignError("control characters are not allowed", where)
    if any(c in value for c in '"<>`\\'):
        raise DesignError('value contains one of " < > ` \\', where)
    if merge_ok:
        return
    if any(c in value for c in ";{}"):
        raise DesignError("value contains ';', '{' or '}' (merge tags are not allowed here)", where)
    if _CSS_BAD.search(value) or re.search(r"url\s*\(", value, re.I):
        raise DesignError("value contains a forbidden CSS construct", where)
