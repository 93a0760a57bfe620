"""Local mail catcher for dev mode: an SMTP server that keeps every message as an ``.eml`` file.

Messages go to ``<data_dir>/outbox/`` under a name made only of the UTC receive time and a
random id (``20250101T120000.123456Z-1a2b3c4d.eml``), written atomically (temp file + rename).
One line per message is printed: time, envelope sender, recipients and the sanitised Subject.

Standalone: ``python -m shared.dev.catcher [--host H] [--port P] [--outbox DIR]`` (defaults from
MAILSVC_SMTP_HOST, MAILSVC_SMTP_PORT, MAILSVC_DATA_DIR). Any AUTH is accepted, TLS is not offered.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import unicodedata
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any, TextIO

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from shared.files import write_atomically
from shared.settings import Settings, get_settings

OUTBOX_DIRNAME = "outbox"
SUBJECT_LIMIT = 120
ADDRESS_LIMIT = 100
SERVER_HOSTNAME = "mailsvc-dev-catcher"

# CSI / OSC / two-character escape sequences, so "\x1b[31m" disappears entirely.
_ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


def outbox_dir(settings: Settings) -> Path:
    return settings.data_dir / OUTBOX_DIRNAME


def sanitize(text: str, limit: int = SUBJECT_LIMIT) -> str:
    """One printable line: escape sequences removed, control/format/separator characters
    (CR, LF, ESC, bidi overrides, ...) turned into spaces, whitespace collapsed, at most
    ``limit`` characters (an ellipsis marks a cut)."""
    text = _ANSI_ESCAPE.sub("", text)
    chars = (" " if unicodedata.category(ch)[0] in "CZ" else ch for ch in text)
    line = " ".join("".join(chars).split())
    return line if len(line) <= limit else line[: max(limit - 1, 0)] + "…"


def eml_filename(now: datetime | None = None) -> str:
    """File name for a received message: UTC timestamp and a short random id, nothing else."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{uuid.uuid4().hex[:8]}.eml"


def save_eml(outbox: Path, data: bytes, now: datetime | None = None) -> Path:
    """Write ``data`` to a new ``.eml`` in ``outbox`` atomically; return its path."""
    target = outbox / eml_filename(now)
    write_atomically(target, data, temp_prefix=".incoming-")
    return target


def message_subject(data: bytes) -> str:
    """The decoded Subject header of a raw message ("" if absent or unparsable)."""
    try:
        headers = BytesHeaderParser(policy=default_policy).parsebytes(data)
        return str(headers.get("Subject", ""))
    except Exception:  # a hostile header must not break the catcher
        return ""


def summary_line(when: datetime, mail_from: str, rcpt_tos: Sequence[str], subject: str) -> str:
    """The printed line for one message; every attacker-controlled part is sanitised."""
    sender = sanitize(mail_from, ADDRESS_LIMIT) or "<>"
    recipients = ", ".join(sanitize(r, ADDRESS_LIMIT) for r in rcpt_tos)
    return (
        f"{when.strftime('%Y-%m-%dT%H:%M:%SZ')}  from {sender}  to {sanitize(recipients)}"
        f"  subject: {sanitize(subject)}"
    )


class CatcherHandler:
    """aiosmtpd handler: store each message in ``outbox`` and print one summary line."""

    def __init__(self, outbox: Path, out: TextIO | None = None) -> None:
        self.outbox = outbox
        self.out = out if out is not None else sys.stdout

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or envelope.content or b""
        if isinstance(data, str):
            data = data.encode("utf-8", errors="surrogateescape")
        now = datetime.now(UTC)
        await asyncio.to_thread(save_eml, self.outbox, data, now)
        line = summary_line(now, envelope.mail_from or "", envelope.rcpt_tos, message_subject(data))
        print(line, file=self.out, flush=True)
        return "250 Message accepted for delivery"


def _accept_any_auth(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    return AuthResult(success=True)


async def start_catcher(host: str, port: int, outbox: Path, out: TextIO | None = None) -> asyncio.Server:
    """Start listening on host:port in the running loop; close the returned server to stop."""
    outbox.mkdir(parents=True, exist_ok=True)
    handler = CatcherHandler(outbox, out)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTP(
            handler,
            hostname=SERVER_HOSTNAME,
            enable_SMTPUTF8=True,
            authenticator=_accept_any_auth,
            auth_require_tls=False,
            loop=loop,
        ),
        host,
        port,
        reuse_address=True,
    )


async def serve(host: str, port: int, outbox: Path, out: TextIO | None = None) -> None:
    """Run the catcher until SIGINT or SIGTERM."""
    stream = out if out is not None else sys.stdout
    server = await start_catcher(host, port, outbox, stream)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"SMTP catcher on {host}:{port}, saving to {outbox}", file=stream, flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()


def main(argv: Sequence[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m shared.dev.catcher", description=__doc__)
    parser.add_argument("--host", default=settings.smtp_host)
    parser.add_argument("--port", type=int, default=settings.smtp_port)
    parser.add_argument("--outbox", type=Path, default=outbox_dir(settings))
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.outbox.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
