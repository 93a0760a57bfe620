"""``mailsvc render DESIGN.json [--data contact.json] [--text]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from services.mass_mailer.templates.compiled import CompiledTemplate
from services.mass_mailer.templates.content import DesignError
from services.mass_mailer.templates.merge import MergeError
from services.mass_mailer.templates.render import render_design


def _load(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        typer.echo(f"error: cannot read {what} {path}: {exc}", err=True)
        raise typer.Exit(2) from exc


def render_command(
    design: Annotated[Path, typer.Argument(help="MJML-JSON design file")],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="JSON merge data: a contact object, or {contact, links, extra}"),
    ] = None,
    text: Annotated[bool, typer.Option("--text", help="Print the plain-text part instead of HTML")] = False,
    subject: Annotated[str, typer.Option("--subject", help="Subject (printed to stderr when merged)")] = "",
) -> None:
    """Render an MJML-JSON design to HTML (or text); with --data the merge tags are filled."""
    raw = _load(design, "design")
    try:
        rendered = render_design(raw)
    except (DesignError, MergeError) as exc:
        typer.echo(f"error: invalid design: {exc}", err=True)
        raise typer.Exit(2) from exc
    if data is None:
        typer.echo(rendered.text if text else rendered.html, nl=False)
        return
    values = _load(data, "data")
    if not isinstance(values, dict):
        typer.echo("error: --data must hold a JSON object", err=True)
        raise typer.Exit(2)
    if "contact" not in values:
        values = {"contact": values}
    try:
        compiled = CompiledTemplate(
            template_id=0, version_id=0, subject=subject, html=rendered.html, text=rendered.text
        )
        mail = compiled.render(
            contact=values.get("contact") or {},
            links=values.get("links") or {},
            extra=values.get("extra") or None,
        )
    except (MergeError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if subject:
        typer.echo(f"Subject: {mail.subject}", err=True)
    typer.echo(mail.text if text else mail.html, nl=False)


def register(app: typer.Typer) -> None:
    app.command("render")(render_command)
