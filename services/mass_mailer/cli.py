"""Mass mailer commands of ``mailsvc`` (render, mailing ...)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the mass mailer's commands to ``app``."""
