"""Parse any received mail into a plain structure; never raises on malformed input.

The stdlib parser with ``policy.default`` does the MIME work and records defects instead of
failing; this module walks the parts itself to repair what real mail gets wrong (charsets,
encoded words, missing From, uuencode, TNEF, forwarded messages), then classifies the mail
and finds ticket references.
"""

from __future__ import annotations

import binascii
import mimetypes
import re
from email import message_from_bytes, policy
from email.message import Message
from email.policy import EmailPolicy
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field

from services.mail_scanner.attachments import MAX_ATTACHMENT_BYTES, digests, sanitize_filename
from services.mail_scanner.classify import BounceInfo, classify
from services.mail_scanner.decoding import (
    address_pairs,
    codec_for,
    decode_bytes,
    decode_header_value,
    repair_surrogates,
)
from services.mail_scanner.html_text import html_to_text, safe_html
from services.mail_scanner.references import ticket_number_from
from services.mail_scanner.reply_strip import strip_reply

MAX_MESSAGE_BYTES = 25 * 1024 * 1024
MAX_PARTS = 500
MAX_DEPTH = 20
MAX_HEADER_CHARS = 4_000
MAX_TEXT_CHARS = 2_000_000
_MSGID = re.compile(r"<[^<>\s]{1,900}>")
_SURROGATE = re.compile("[\udc80-\udcff]")
_ANY_SURROGATE = re.compile("[\ud800-\udfff]")
_BARE_MSGID = re.compile(r"^[^<>\s@]{1,450}@[^<>\s@]{1,450}$")
_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})+")
_UU_BLOCK = re.compile(r"^begin [0-7]{3,4} ([^\r\n]{1,255})\r?\n(.*?)^end\s*$", re.MULTILINE | re.DOTALL)
_HEADER_LINE = re.compile(rb"^(From |[!-9;-~]{1,76}:)")


class _CachingPolicy(EmailPolicy):
    """policy.default, but a header value is parsed once, not on every ``msg.get()``
    (content-type lookups during the walk otherwise dominate the parse time)."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):
            return value
        if len(value) > 2_000:
            return super().header_fetch_parse(name, value)
        return _parsed_header(name, value)


_POLICY = _CachingPolicy()


@lru_cache(maxsize=8192)
def _parsed_header(name: str, value: str) -> Any:
    return policy.default.header_fetch_parse(name, value)


class ParsedAddress(BaseModel):
    name: str = ""
    email: str


class ParsedAttachment(BaseModel):
    filename: str
    content_type: str
    size: int
    sha256: str
    md5: str
    content_id: str | None = None
    inline: bool = False
    source: Literal["mime", "uuencode", "tnef", "rfc822"] = "mime"
    too_large: bool = False
    content: bytes = Field(default=b"", exclude=True, repr=False)


class ParsedMail(BaseModel):
    message_id: str | None = None
    in_reply_to: list[str] = Field(default_factory=list)
    references: list[str] = Field(default_factory=list)
    subject: str = ""
    date: str | None = None
    from_: list[ParsedAddress] = Field(default_factory=list, alias="from")
    from_email: str | None = None
    from_display_name: str = ""
    to: list[ParsedAddress] = Field(default_factory=list)
    cc: list[ParsedAddress] = Field(default_factory=list)
    reply_to: list[ParsedAddress] = Field(default_factory=list)
    headers: list[tuple[str, str]] = Field(default_factory=list)
    text: str = ""
    reply_text: str = ""
    html: str | None = None
    attachments: list[ParsedAttachment] = Field(default_factory=list)
    kind: Literal["normal", "auto_reply", "bounce"] = "normal"
    auto_reply_reason: str | None = None
    bounce: BounceInfo | None = None
    ticket_number: str | None = None
    defects: list[str] = Field(default_factory=list)
    size: int = 0
    oversize: bool = False
    error: str | None = None

    model_config = {"populate_by_name": True}

    def header(self, name: str) -> str | None:
        """The first decoded value of a header, or None."""
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)


class _State:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.html: str | None = None
        self.attachments: list[ParsedAttachment] = []
        self.defects: list[str] = []
        self.parts = 0


def _raw_headers(msg: Message, name: str) -> list[str]:
    lowered = name.lower()
    return [str(value)[: MAX_HEADER_CHARS * 4] for key, value in msg.raw_items() if key.lower() == lowered]


def _raw_header(msg: Message, name: str) -> str:
    return next(iter(_raw_headers(msg, name)), "")


def _charset_hint(msg: Message) -> str | None:
    """The first declared body charset: what raw 8-bit header bytes are most likely in."""
    for index, part in enumerate(msg.walk()):
        if index > 20:
            break
        try:
            charset = part.get_content_charset()
        except Exception:
            charset = None
        if charset and codec_for(charset) not in ("ascii", "cp1252", "iso8859-15", "utf-8", ""):
            return charset  # a regional charset says more than Latin-1 or UTF-8 (tried anyway)
    return None


def _addresses(raw: str, hint: str | None = None) -> list[ParsedAddress]:
    if _SURROGATE.search(raw):
        raw = repair_surrogates(raw, hint)
    raw = re.sub(r"\r?\n[ \t]*", " ", raw)
    found: list[ParsedAddress] = []
    try:
        pairs = list(address_pairs(raw))
    except Exception:
        pairs = []
    for display, email in pairs:
        email = email.strip()
        if "=?" in email:
            email = decode_header_value(email).replace(" ", "")
        local, _, domain = email.partition("@")
        # A malformed addr-spec is kept as written (never guessed from a part of it, which
        # could be somebody else); only text without one "@" is searched for an address.
        if email.count("@") != 1 or not local.strip() or not domain.strip():
            match = _EMAIL.search(email) or _EMAIL.search(display)
            if not match:
                continue
            email = match.group(0)
        name = decode_header_value(display).strip().strip("\"'").strip()
        found.append(ParsedAddress(name=name[:500], email=email.lower()[:320]))
    if not found:
        for match in _EMAIL.finditer(decode_header_value(raw)):
            found.append(ParsedAddress(email=match.group(0).lower()[:320]))
    return found[:500]


def _message_ids(value: str) -> list[str]:
    ids = _MSGID.findall(value)
    if not ids and _BARE_MSGID.match(value.strip()):
        ids = [f"<{value.strip()}>"]
    return ids[:100]


def _lenient_base64(text: str) -> bytes:
    """Base64 as real mailers write it: stray characters skipped, broken padding tolerated."""
    try:
        return binascii.a2b_base64(text)
    except ValueError:  # binascii.Error, or non-ASCII characters in the text
        pass
    cleaned = re.sub(r"[^A-Za-z0-9+/]", "", text)
    if len(cleaned) % 4 == 1:
        cleaned = cleaned[:-1]  # a lone trailing character carries no complete byte
    try:
        return binascii.a2b_base64(cleaned + "=" * (-len(cleaned) % 4))
    except ValueError:
        return b""


def _payload_bytes(part: Message) -> bytes:
    if str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64":
        raw = part.get_payload()
        if isinstance(raw, str):
            return _lenient_base64(raw)
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", errors="surrogateescape")
    return b""


def _part_text(part: Message) -> str:
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return decode_bytes(_payload_bytes(part), charset)


def _filename(part: Message) -> str | None:
    if not any(
        "name" in str(value).lower()
        for key, value in part.raw_items()
        if key.lower() in ("content-type", "content-disposition")
    ):
        return None  # neither a filename nor a name parameter (the common body part)
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if name is None:
        try:
            name = part.get_param("name")  # type: ignore[assignment]
        except Exception:
            name = None
        if isinstance(name, tuple):
            name = name[2] if len(name) > 2 else None
    return decode_header_value(str(name)) if name else None


def _default_name(content_type: str) -> str:
    extension = mimetypes.guess_extension(content_type) or ".bin"
    return f"attachment{extension}"


def _add_attachment(
    state: _State,
    content: bytes,
    *,
    filename: str | None,
    content_type: str,
    content_id: str | None = None,
    inline: bool = False,
    source: Literal["mime", "uuencode", "tnef", "rfc822"] = "mime",
) -> None:
    sha256, md5 = digests(content)
    too_large = len(content) > MAX_ATTACHMENT_BYTES
    state.attachments.append(
        ParsedAttachment(
            filename=sanitize_filename(filename, _default_name(content_type)),
            content_type=content_type[:200],
            size=len(content),
            sha256=sha256,
            md5=md5,
            content_id=(content_id.strip().strip("<>")[:500] or None) if content_id else None,
            inline=inline,
            source=source,
            too_large=too_large,
            content=b"" if too_large else content,
        )
    )


def _extract_uuencoded(state: _State, text: str) -> str:
    """Move ``begin 644 name ... end`` blocks out of a text body into attachments."""
    if "begin " not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        data = bytearray()
        for line in match.group(2).splitlines():
            if not line.strip() or line.strip() == "`":
                continue
            try:
                data += binascii.a2b_uu(line)
            except ValueError:
                # Some encoders emit a wrong length byte: decode what the line really holds.
                try:
                    count = ((ord(line[0]) - 32) & 63) * 4 // 3
                    data += binascii.a2b_uu(line[: count + 4])
                except (ValueError, IndexError):
                    state.defects.append("BadUuencodeLine")
        name = match.group(1).strip()
        _add_attachment(
            state,
            bytes(data),
            filename=name,
            content_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
            source="uuencode",
        )
        return ""

    return _UU_BLOCK.sub(replace, text)


def _extract_tnef(state: _State, content: bytes) -> bool:
    try:
        from tnefparse import TNEF

        tnef = TNEF(content)
    except Exception:
        state.defects.append("UnreadableTNEF")
        return False
    for item in tnef.attachments:
        try:
            name = item.long_filename() or item.name
        except Exception:
            name = getattr(item, "name", None)
        name = name.decode("latin-1") if isinstance(name, bytes) else name
        data = item.data if isinstance(item.data, bytes) else bytes(item.data or b"")
        _add_attachment(
            state,
            data,
            filename=str(name or ""),
            content_type=mimetypes.guess_type(str(name or ""))[0] or "application/octet-stream",
            source="tnef",
        )
    body = getattr(tnef, "htmlbody", None) or getattr(tnef, "body", None)
    if body and not state.texts:
        text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else str(body)
        state.texts.append(html_to_text(text) if "<" in text and ">" in text else text)
    return True


def _is_tnef(part: Message, filename: str | None) -> bool:
    return part.get_content_type() in ("application/ms-tnef", "application/vnd.ms-tnef") or (
        (filename or "").lower() == "winmail.dat"
    )


def _forward_name(inner: Message | None, filename: str | None) -> str:
    if filename:
        return filename
    subject = decode_header_value(_raw_header(inner, "Subject")) if inner is not None else ""
    return f"{subject.strip()[:150] or 'forwarded message'}.eml"


def _walk(part: Message, state: _State, depth: int, attached: bool) -> None:
    state.parts += 1
    if state.parts > MAX_PARTS:
        if "TooManyParts" not in state.defects:
            state.defects.append("TooManyParts")
        return
    if depth > MAX_DEPTH:
        state.defects.append("TooDeep")
        return
    state.defects.extend(type(d).__name__ for d in getattr(part, "defects", []))
    content_type = part.get_content_type()
    filename = _filename(part)
    try:
        disposition = part.get_content_disposition()
    except Exception:
        disposition = None

    if content_type in ("message/rfc822", "message/global") or (
        part.is_multipart()
        and content_type.startswith("message/")
        and content_type != "message/delivery-status"
    ):
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if isinstance(inner, Message):
            try:
                data = inner.as_bytes(policy=policy.default.clone(linesep="\r\n"))
            except Exception:
                data = _payload_bytes(part)
            _add_attachment(
                state,
                data,
                filename=_forward_name(inner, filename),
                content_type=content_type,
                source="rfc822",
            )
            _walk(inner, state, depth + 1, attached=True)
        return
    if content_type in ("message/delivery-status", "message/global-delivery-status"):
        payload = part.get_payload()
        data = b""
        if isinstance(payload, list):
            try:
                data = b"\n".join(p.as_bytes() for p in payload if isinstance(p, Message))
            except Exception:
                data = b""
        data = data or _payload_bytes(part)
        _add_attachment(state, data, filename=filename or "delivery-status.txt", content_type=content_type)
        return
    if part.is_multipart():
        payload = part.get_payload()
        for sub in payload if isinstance(payload, list) else []:
            if isinstance(sub, Message):
                _walk(sub, state, depth + 1, attached)
        return

    content_id = _raw_header(part, "Content-ID") or None
    is_body_type = content_type in ("text/plain", "text/html") and disposition != "attachment"
    if is_body_type and attached and not filename:
        return  # the body of a forwarded message: kept inside its .eml, not an attachment
    as_body = is_body_type and not attached
    if as_body and filename and content_type == "text/plain" and state.texts:
        as_body = False
    if as_body and content_type == "text/html" and state.html is not None:
        as_body = False
    if as_body and content_type == "text/plain":
        text = _extract_uuencoded(state, _part_text(part))
        state.texts.append(text)
        return
    if as_body and content_type == "text/html":
        state.html = _part_text(part)
        return
    content = _payload_bytes(part)
    if _is_tnef(part, filename) and _extract_tnef(state, content):
        return
    _add_attachment(
        state,
        content,
        filename=filename,
        content_type=content_type,
        content_id=content_id,
        inline=disposition == "inline" or (content_id is not None and disposition != "attachment"),
    )


def _repair_header_block(raw: bytes) -> bytes | None:
    """Drop junk lines before the headers and fold stray non-header lines inside the header
    block into the previous header (instead of ending the headers there). None: no headers."""
    lines = raw.split(b"\n")
    start = 0
    while start < min(len(lines), 6) and not _HEADER_LINE.match(lines[start]):
        start += 1
    if start >= len(lines) or not _HEADER_LINE.match(lines[start]):
        return None
    out = [lines[start]]
    index = start + 1
    while index < len(lines):
        line = lines[index]
        if not line.strip(b"\r"):
            break
        if line[:1] in (b" ", b"\t") or _HEADER_LINE.match(line):
            out.append(line)
        else:
            # Stray lines (unfolded continuations) are kept when another header follows soon.
            ahead = lines[index + 1 : index + 60]
            resumes = False
            for following in ahead:
                if not following.strip(b"\r"):
                    break
                if _HEADER_LINE.match(following):
                    resumes = True
                    break
            if not resumes:
                break
            out.append(b" " + line)
        index += 1
    return b"\n".join(out + lines[index:])


def _sender(msg: Message, hint: str | None) -> list[ParsedAddress]:
    """From, repaired: an empty or malformed From falls back to Reply-To, Sender, Return-Path,
    and as a last resort to a bare name such as ``MAILER-DAEMON``."""
    for name in ("From", "Reply-To", "Sender", "Return-Path"):
        for value in _raw_headers(msg, name):
            found = _addresses(value, hint)
            if found:
                return found
    bare = re.match(r"\s*([\w.-]{1,64})\s*(?:\(([^)]{0,200})\))?\s*$", _raw_header(msg, "From"))
    if bare:
        return [ParsedAddress(email=bare.group(1).lower(), name=decode_header_value(bare.group(2) or ""))]
    return []


def _date(msg: Message) -> str | None:
    value = _raw_header(msg, "Date").strip()
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).isoformat()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _headers(msg: Message) -> list[tuple[str, str]]:
    return [
        (str(k)[:200], decode_header_value(str(v))[:MAX_HEADER_CHARS]) for k, v in list(msg.raw_items())[:300]
    ]


def _header_block(raw: bytes) -> bytes:
    end = min((i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0), default=-1)
    return raw[: end + 4] if 0 <= end < 1_000_000 else raw[:65_536]


def _scrub(value: Any) -> Any:
    """Raw 8-bit bytes survive the stdlib parser as surrogate escapes in any header-derived
    string (Message-IDs, content types, ...); decode them so the result is valid Unicode."""
    if isinstance(value, str):
        if not value.isascii() and _ANY_SURROGATE.search(value):
            return _ANY_SURROGATE.sub("\ufffd", repair_surrogates(value))
        return value
    if isinstance(value, BaseModel):
        fields = value.__dict__  # pydantic keeps field values here; no validation on assignment
        for name, current in fields.items():
            if isinstance(current, (str, list, tuple, BaseModel)):
                scrubbed = _scrub(current)
                if scrubbed is not current:
                    fields[name] = scrubbed
        return value
    if isinstance(value, (list, tuple)):
        items = [item if type(item) is str and item.isascii() else _scrub(item) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return items if isinstance(value, list) else tuple(items)
    return value


def parse_message(raw: bytes, *, ticket_prefix: str = "TT", max_bytes: int = MAX_MESSAGE_BYTES) -> ParsedMail:
    """Parse a raw RFC 5322 message; never raises. Sets ``error`` for hopeless input and
    ``oversize`` (headers only) for mail larger than ``max_bytes``."""
    size = len(raw) if isinstance(raw, (bytes, bytearray)) else 0
    try:
        return _scrub(_parse(bytes(raw), ticket_prefix=ticket_prefix, max_bytes=max_bytes))
    except Exception as exc:  # last line of defence: hostile input must never escape
        return ParsedMail(size=size, error=f"unparseable: {type(exc).__name__}")


def _parse(raw: bytes, *, ticket_prefix: str, max_bytes: int) -> ParsedMail:
    if not raw.strip():
        return ParsedMail(size=len(raw), error="empty message")
    oversize = len(raw) > max_bytes
    source = _header_block(raw) if oversize else raw
    repaired = _repair_header_block(source)
    if repaired is None:
        return ParsedMail(size=len(raw), error="no message header found")
    source = repaired
    msg = message_from_bytes(source, policy=_POLICY)
    parsed = ParsedMail(size=len(raw), oversize=oversize)
    parsed.message_id = next(iter(_message_ids(_raw_header(msg, "Message-ID"))), None)
    parsed.in_reply_to = _message_ids(_raw_header(msg, "In-Reply-To"))
    parsed.references = _message_ids(_raw_header(msg, "References"))
    hint = _charset_hint(msg)
    parsed.subject = decode_header_value(_raw_header(msg, "Subject"), hint)[:MAX_HEADER_CHARS]
    parsed.date = _date(msg)
    parsed.from_ = _sender(msg, hint)
    if parsed.from_:
        parsed.from_email = parsed.from_[0].email
        parsed.from_display_name = parsed.from_[0].name
    parsed.to = _addresses(", ".join(_raw_headers(msg, "To")), hint)
    parsed.cc = _addresses(", ".join(_raw_headers(msg, "Cc")), hint)
    parsed.reply_to = _addresses(", ".join(_raw_headers(msg, "Reply-To")), hint)
    parsed.headers = _headers(msg)
    state = _State()
    state.defects.extend(type(d).__name__ for d in msg.defects)
    if oversize:
        state.defects.append("Oversize")
    else:
        _walk(msg, state, 0, attached=False)
    text = "\n".join(t for t in state.texts if t.strip())
    if state.html is not None:
        parsed.html = safe_html(state.html)
        if not text.strip():
            text = html_to_text(state.html)
    parsed.text = text[:MAX_TEXT_CHARS]
    parsed.reply_text = strip_reply(parsed.text)
    parsed.attachments = state.attachments
    parsed.defects = sorted(set(state.defects))
    verdict = classify(
        msg,
        subject=parsed.subject,
        text=parsed.text,
        reply_text=parsed.reply_text,
        message_id=parsed.message_id,
    )
    parsed.kind = verdict.kind
    parsed.bounce = verdict.bounce
    parsed.auto_reply_reason = verdict.reason if verdict.kind == "auto_reply" else None
    parsed.ticket_number = ticket_number_from(parsed.subject, parsed.text, ticket_prefix)
    return parsed
