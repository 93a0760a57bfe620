"""Design -> HTML with the pure-Python MJML port (once per template version), plus the text part.

The output still holds the merge tags; ``compiled.CompiledTemplate`` fills them per recipient.
Known port bugs are avoided here: mj-fonts reusing a default font name are removed before the
port sees them and their URL swapped into its font block afterwards (what npm mjml does), and
the port's malformed ``<!--[if !mso><!-->`` is repaired.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from mjml import mjml_to_html

from services.mass_mailer.templates.content import DesignError
from services.mass_mailer.templates.design import (
    DEFAULT_FONTS,
    default_font_overrides,
    to_mjml,
    validate_design,
    with_preheader,
    without_default_fonts,
)
from services.mass_mailer.templates.merge import compile_merge
from services.mass_mailer.templates.plaintext import html_to_text

MAX_HTML_CHARS = 65_000  # the CRM's limit for a mail's HTML
_MJML_LOCK = threading.Lock()  # the port keeps a module-level component registry


@dataclass(frozen=True)
class RenderedDesign:
    mjml: str
    html: str
    text: str


def mjml_xml_to_html(mjml: str, font_overrides: dict[str, str] | None = None) -> str:
    """Run the MJML port on serialised MJML and repair its known output bugs."""
    with _MJML_LOCK:
        try:
            result = mjml_to_html(mjml, template_dir="/nonexistent")
        except Exception as exc:  # the port raises assorted errors on odd but valid input
            raise DesignError(f"the MJML renderer failed: {type(exc).__name__}: {exc}") from exc
    html = result.html.replace("<!--[if !mso><!-->", "<!--[if !mso]><!-->")
    if font_overrides:
        head, sep, body = html.partition("<body")
        for name, href in font_overrides.items():
            head = head.replace(DEFAULT_FONTS[name], href)
        html = head + sep + body
    return html


def render_design(design: Any, *, preheader: str = "", enforce_limit: bool = True) -> RenderedDesign:
    """Validate, serialise and render a design; the merge tags in it are checked as well."""
    valid = validate_design(design)
    if preheader:
        if len(preheader) > 1_000 or "<" in preheader:
            raise DesignError("the preheader must be plain text of at most 1,000 characters", "preheader")
        valid = with_preheader(valid, preheader)
    overrides = default_font_overrides(valid)
    mjml = to_mjml(without_default_fonts(valid) if overrides else valid)
    html = mjml_xml_to_html(mjml, overrides)
    if enforce_limit and len(html) > MAX_HTML_CHARS:
        raise DesignError(
            f"the rendered HTML has {len(html):,} characters; the limit is {MAX_HTML_CHARS:,} "
            "(simplify the design)"
        )
    text = html_to_text(html)
    compile_merge(html, html=True, where="body")
    compile_merge(text, html=False, where="text part")
    return RenderedDesign(mjml=mjml, html=html, text=text)
