"""Attendance certificates: a document template with merge tags, rendered into a PDF (fpdf2).

Templates come from users: they run in jinja2's sandbox, their output is capped, and errors are
reported as ``CertificateError`` (a 422 when the trigger is saved).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fpdf import FPDF
from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment

MAX_TEMPLATE_CHARS = 20_000
MAX_OUTPUT_CHARS = 20_000
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
_env = SandboxedEnvironment(autoescape=False)


class CertificateError(ValueError):
    pass


def check_template(source: str) -> None:
    """Reject a document template that is too long or does not compile."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise CertificateError(f"certificate template longer than {MAX_TEMPLATE_CHARS} characters")
    try:
        _env.from_string(source)
    except TemplateError as exc:
        raise CertificateError(f"certificate template does not compile: {exc}") from exc


def render_text(source: str, merge_data: dict[str, Any]) -> str:
    try:
        text = _env.from_string(source).render(**merge_data)
    except TemplateError as exc:
        raise CertificateError(f"certificate template failed: {exc}") from exc
    return text[:MAX_OUTPUT_CHARS]


def _font(pdf: FPDF) -> tuple[str, bool]:
    """DejaVu (full Unicode) when installed, else the core Helvetica (Latin-1 only)."""
    regular, bold = FONT_DIR / "DejaVuSans.ttf", FONT_DIR / "DejaVuSans-Bold.ttf"
    if regular.exists() and bold.exists():
        pdf.add_font("DejaVu", "", str(regular))
        pdf.add_font("DejaVu", "B", str(bold))
        return "DejaVu", True
    return "Helvetica", False


def certificate_pdf(text: str, *, title: str = "Certificate of attendance") -> bytes:
    """The first line of ``text`` is the heading unless ``title`` is given; the rest are paragraphs."""
    pdf = FPDF(format="A4")
    pdf.set_title(title)
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.add_page()
    family, unicode_ok = _font(pdf)

    def safe(value: str) -> str:
        return value if unicode_ok else value.encode("latin-1", "replace").decode("latin-1")

    pdf.set_font(family, "B", 24)
    pdf.ln(30)
    pdf.multi_cell(0, 12, safe(title), align="C")
    pdf.ln(10)
    pdf.set_font(family, "", 14)
    for paragraph in text.splitlines():
        if paragraph.strip():
            pdf.multi_cell(0, 8, safe(paragraph), align="C")
        pdf.ln(4)
    return bytes(pdf.output())


def certificate_for(source: str, merge_data: dict[str, Any]) -> bytes:
    return certificate_pdf(render_text(source, merge_data))
