"""The one Scanner per service context, shared by the background task and the API."""

from __future__ import annotations

from services.mail_scanner.scanner import Scanner
from shared.service import ServiceContext

_scanners: dict[int, Scanner] = {}


def scanner_for(context: ServiceContext) -> Scanner:
    scanner = _scanners.get(id(context))
    if scanner is None or scanner.context is not context:
        scanner = _scanners[id(context)] = Scanner(context)
    return scanner
