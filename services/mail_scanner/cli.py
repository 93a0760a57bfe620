"""Mail scanner commands of ``mailsvc``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def parse(
        file: Annotated[Path, typer.Argument(help=".eml file, or - for standard input")],
    ) -> None:
        """Parse a mail and print it as JSON."""
        from services.mail_scanner.parsing import parse_message
        from shared.cli import _read_file

        raw = sys.stdin.buffer.read() if str(file) == "-" else _read_file(file)
        typer.echo(parse_message(raw).model_dump_json(by_alias=True, indent=2))
