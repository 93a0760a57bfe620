"""Session-wide capture of every log record, and the secrets that must never appear in them.

``install()`` (called from tests/reliability/conftest.py) wraps ``logging.Logger.callHandlers``,
so records of every logger are seen, including loggers that do not propagate to the root
(FastStream's) and whatever handlers ``shared.logs.configure_logging`` installs at service start.
The text kept is what a handler would receive: the raw message, exception and stack text, before
any handler-level redaction — the strictest reading of "never in logs".
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable

CAPTURED: list[str] = []  # distinct lines only (a long run repeats most of its lines)
ACTIVE = [False]  # switched on for the whole run by tests/reliability/conftest.py
_seen: set[str] = set()
SECRETS: dict[str, str] = {}  # secret value -> what it is (for the failure message)
MIN_SECRET_CHARS = 6  # shorter values would match ordinary words
_installed: list[object] = []


def register_secret(value: str | bytes | None, what: str) -> None:
    """A value that must never be logged (a password, key, token, PEM body line)."""
    if value is None:
        return
    text = value.decode() if isinstance(value, bytes) else value
    if len(text) >= MIN_SECRET_CHARS:
        SECRETS[text] = what


def register_pem(pem: str | bytes, what: str) -> None:
    """Every base64 line of a PEM body (any one of them in a log would leak key material)."""
    text = pem.decode() if isinstance(pem, bytes) else pem
    for line in text.splitlines():
        if line and not line.startswith("-----") and len(line) >= 32:
            register_secret(line, what)


def _text(record: logging.LogRecord) -> str:
    try:
        message = record.getMessage()
    except Exception:  # a malformed record must not break capture
        message = f"{record.msg!r} {record.args!r}"
    parts = [message]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append("".join(traceback.format_exception(*record.exc_info)))
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(parts)


def install() -> None:
    if _installed:
        return
    original = logging.Logger.callHandlers

    def call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
        if ACTIVE[0]:
            line = f"{record.name} {record.levelname} {_text(record)}"
            if line not in _seen:
                _seen.add(line)
                CAPTURED.append(line)
        original(self, record)

    logging.Logger.callHandlers = call_handlers  # type: ignore[method-assign]
    _installed.append(original)


def leaks(lines: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(what leaked, the first 300 characters of the log line) for every secret found."""
    found = []
    for line in CAPTURED if lines is None else lines:
        for secret, what in SECRETS.items():
            if secret in line:
                found.append((what, line[:300]))
    return found
