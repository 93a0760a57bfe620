"""Mass mailer commands of ``mailsvc`` (render, mailing ...)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the mass mailer's commands to ``app``."""
    from services.mass_mailer.templates import cli as templates_cli

    templates_cli.register(app)

    from services.mass_mailer import mailing_cli

    mailing_cli.register(app)
