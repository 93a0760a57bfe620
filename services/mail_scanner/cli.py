"""Mail scanner commands of ``mailsvc``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def parse(
        file: Annotated[Path, typer.Argument(help=".eml file, or - for standard input")],
    ) -> None:
        """Parse a mail and print it as JSON (exit 2 with an error object on hopeless input)."""
        from services.mail_scanner.parsing import parse_message
        from shared.cli import _read_file
        from shared.settings import get_settings

        raw = sys.stdin.buffer.read() if str(file) == "-" else _read_file(file)
        settings = get_settings()
        parsed = parse_message(
            raw,
            ticket_prefix=settings.scanner_ticket_prefix,
            max_bytes=settings.scanner_max_message_bytes,
        )
        if parsed.error:
            typer.echo(json.dumps({"error": parsed.error, "size": parsed.size}))
            raise typer.Exit(2)
        typer.echo(parsed.model_dump_json(by_alias=True, indent=2))
