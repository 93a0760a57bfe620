"""A fast composer for bulk mail: multipart/alternative (text + HTML, quoted-printable) built as
bytes directly. The stdlib composer (shared.mail.compose) spends ~3 ms on a 20 KB message in
header objects and its generator; this builds the same structure in ~0.2 ms with binascii's C
quoted-printable encoder. Headers are checked with compose's own rules (no CR/LF or control
characters); non-ASCII words become RFC 2047 encoded words, never split inside a character."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from email.utils import format_datetime

from shared.mail.compose import CompositionError, MailAddress, clean_header_value

_ATEXT_PHRASE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ .-]*$")
_MAX_WORD_BYTES = 45  # 45 bytes of UTF-8 -> 60 base64 chars + 12 of framing < 75
CRLF = b"\r\n"


def encoded_words(text: str) -> list[str]:
    """RFC 2047 B-encoded words, each at most 75 characters, never splitting a character."""
    words: list[str] = []
    chunk = b""
    for char in text:
        raw = char.encode("utf-8")
        if len(chunk) + len(raw) > _MAX_WORD_BYTES:
            words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode()}?=")
            chunk = b""
        chunk += raw
    if chunk:
        words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode()}?=")
    return words


def unstructured(name: str, value: str) -> bytes:
    """``Name: value`` folded at 78 columns where possible; non-ASCII values encoded."""
    value = clean_header_value(value, name.lower())
    if value.isascii():
        tokens = value.split(" ")
    else:
        tokens = encoded_words(value)
    lines: list[str] = []
    line = f"{name}:"
    for token in tokens:
        if len(line) + 1 + len(token) > 78 and line != f"{name}:":
            lines.append(line)
            line = ""
        line += f" {token}"
    lines.append(line)
    return "\r\n".join(lines).encode("ascii") + CRLF


def address(field: str, addr: MailAddress) -> str:
    email = clean_header_value(addr.email, field)
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain or any(c in email for c in ' <>(),;:"[]\\'):
        raise CompositionError(f"{field}: {email!r} is not an email address")
    if not local.isascii():
        raise CompositionError(f"{field}: {email!r} needs SMTPUTF8, which bulk mail does not use")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise CompositionError(f"{field}: invalid domain in {email!r}") from exc
    name = clean_header_value(addr.name, f"{field} name")
    if not name:
        return f"{local}@{domain}"
    if _ATEXT_PHRASE.match(name):
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        display = quoted if re.fullmatch(r"[A-Za-z0-9 ]+", name) else f'"{quoted}"'
    else:
        display = " ".join(encoded_words(name))
    return f"{display} <{local}@{domain}>"


def qp(text: str) -> bytes:
    """Quoted-printable with CRLF line ends (binascii, C speed)."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).replace(b"\n", CRLF)


def build(
    *,
    sender: MailAddress,
    to: MailAddress,
    reply_to: MailAddress | None,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    date: object,
    extra_headers: bytes = b"",
) -> bytes:
    """The whole message as bytes (CRLF), ready to sign and send."""
    boundary = f"=_bulk_{secrets.token_hex(12)}"
    head = [
        extra_headers,
        f"From: {address('from', sender)}\r\n".encode("ascii"),
        f"To: {address('to', to)}\r\n".encode("ascii"),
    ]
    if reply_to is not None:
        head.append(f"Reply-To: {address('reply-to', reply_to)}\r\n".encode("ascii"))
    head += [
        unstructured("Subject", subject),
        f"Date: {format_datetime(date)}\r\n".encode("ascii"),  # type: ignore[arg-type]
        f"Message-ID: {clean_header_value(message_id, 'message-id')}\r\n".encode("ascii"),
        b"MIME-Version: 1.0\r\n",
        f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'.encode("ascii"),
        CRLF,
    ]
    part_head = (
        b'Content-Type: text/%s; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
    )
    delimiter = f"--{boundary}\r\n".encode("ascii")
    return b"".join(
        [
            *head,
            delimiter,
            part_head % b"plain",
            qp(text),
            CRLF,
            delimiter,
            part_head % b"html",
            qp(html),
            CRLF,
            f"--{boundary}--\r\n".encode("ascii"),
        ]
    )
