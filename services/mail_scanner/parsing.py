"""Parse any received mail into a plain structure; never raises on malformed input.

The stdlib parser with ``policy.default`` does the MIME work and records defects instead of
failing; this module picks the bodies, decodes what the headers claim, and caps sizes.
"""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import getaddresses, parsedate_to_datetime

from pydantic import BaseModel, Field

from shared.mail.compose import safe_filename

MAX_PARTS = 500
MAX_HEADER_CHARS = 4_000
_MSGID = re.compile(r"<[^<>\s]{1,900}>")


class ParsedAddress(BaseModel):
    name: str = ""
    email: str


class ParsedAttachment(BaseModel):
    filename: str
    content_type: str
    size: int
    content_id: str | None = None
    inline: bool = False


class ParsedMail(BaseModel):
    message_id: str | None = None
    in_reply_to: list[str] = Field(default_factory=list)
    references: list[str] = Field(default_factory=list)
    subject: str = ""
    date: str | None = None
    from_: list[ParsedAddress] = Field(default_factory=list, alias="from")
    to: list[ParsedAddress] = Field(default_factory=list)
    cc: list[ParsedAddress] = Field(default_factory=list)
    reply_to: list[ParsedAddress] = Field(default_factory=list)
    headers: list[tuple[str, str]] = Field(default_factory=list)
    text: str = ""
    html: str | None = None
    attachments: list[ParsedAttachment] = Field(default_factory=list)
    defects: list[str] = Field(default_factory=list)
    size: int = 0

    model_config = {"populate_by_name": True}


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception as exc:
        return f"<unparseable: {type(exc).__name__}>"
    return "" if value is None else str(value)[:MAX_HEADER_CHARS]


def _addresses(msg: Message, name: str) -> list[ParsedAddress]:
    try:
        values = [str(v) for v in msg.get_all(name, [])]
    except Exception:
        return []
    found = []
    for display, email in getaddresses(values):
        if "@" in email:
            found.append(ParsedAddress(name=display[:500], email=email.strip().lower()[:320]))
    return found[:500]


def _message_ids(value: str) -> list[str]:
    return _MSGID.findall(value)[:100]


def _text_of(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except Exception:
        payload = part.get_payload(decode=True) or b""
        charset = part.get_content_charset() or "utf-8"
        try:
            return payload.decode(charset, errors="replace")
        except LookupError:
            return payload.decode("utf-8", errors="replace")
    return content if isinstance(content, str) else content.decode("utf-8", errors="replace")


def parse_message(raw: bytes) -> ParsedMail:
    msg: EmailMessage = message_from_bytes(raw, policy=policy.default)  # type: ignore[assignment]
    parsed = ParsedMail(size=len(raw))
    parsed.message_id = next(iter(_message_ids(_header(msg, "Message-ID"))), None)
    parsed.in_reply_to = _message_ids(_header(msg, "In-Reply-To"))
    parsed.references = _message_ids(_header(msg, "References"))
    parsed.subject = " ".join(_header(msg, "Subject").split())
    date = _header(msg, "Date")
    try:
        parsed.date = parsedate_to_datetime(date).isoformat() if date else None
    except (TypeError, ValueError):
        parsed.date = None
    parsed.from_ = _addresses(msg, "From")
    parsed.to = _addresses(msg, "To")
    parsed.cc = _addresses(msg, "Cc")
    parsed.reply_to = _addresses(msg, "Reply-To")
    parsed.headers = [(k, _header(msg, k)) for k in list(msg.keys())[:200]]
    defects = [type(d).__name__ for d in msg.defects]

    text_parts: list[str] = []
    for index, part in enumerate(msg.walk()):
        if index >= MAX_PARTS:
            defects.append("TooManyParts")
            break
        defects.extend(type(d).__name__ for d in getattr(part, "defects", []))
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        disposition = part.get_content_disposition()
        filename = part.get_filename()
        if disposition == "attachment" or (filename and content_type not in ("text/plain", "text/html")):
            payload = part.get_payload(decode=True) or b""
            parsed.attachments.append(
                ParsedAttachment(
                    filename=safe_filename(filename or "attachment"),
                    content_type=content_type,
                    size=len(payload),
                    content_id=_header(part, "Content-ID") or None,
                    inline=disposition == "inline",
                )
            )
        elif content_type == "text/plain":
            text_parts.append(_text_of(part))
        elif content_type == "text/html" and parsed.html is None:
            parsed.html = _text_of(part)
    parsed.text = "\n".join(text_parts)
    parsed.defects = sorted(set(defects))
    return parsed
