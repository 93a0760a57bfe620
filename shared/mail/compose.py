"""Build MIME messages from a typed model, treating every value as hostile.

The stdlib ``email`` package does the encoding (``policy.default``: RFC 2047 for non-ASCII,
folding); this module adds the checks it leaves to the caller: no CR/LF or other control
characters in anything that reaches a header, sane attachment names, a size cap.
"""

from __future__ import annotations

import re
import secrets
import time
import unicodedata
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP, EmailPolicy
from email.utils import format_datetime, make_msgid

from pydantic import BaseModel, ConfigDict, Field

MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024
MAX_SUBJECT_CHARS = 998 * 4
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "reply-to",
        "sender",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "dkim-signature",
        "return-path",
        "received",
    }
)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
DECODED_BREAK = re.compile(r"[\r\n\x85\u2028\u2029]")
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,76}$")

MSG_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]{1,900}>")


class MsgIdListHeader:
    """In-Reply-To / References: a list of msg-ids, folded between ids, never encoded.

    The stdlib treats these headers as unstructured text and RFC 2047-encodes long ids, which
    breaks threading in every mail client; this keeps them verbatim, one id per line.
    """

    max_count = 1

    @classmethod
    def parse(cls, value: str, kwds: dict[str, object]) -> None:
        ids = MSG_ID.findall(value)
        if " ".join(ids) != " ".join(value.split()):
            raise CompositionError(f"not a list of message ids: {value[:100]!r}")
        kwds["parse_tree"] = None
        kwds["decoded"] = " ".join(ids)

    def init(self, *args: object, **kw: object) -> None:
        super().init(*args, **kw)  # type: ignore[misc]

    def fold(self, *, policy: EmailPolicy) -> str:
        ids = str(self).split()
        return f"{self.name}: " + f"{policy.linesep} ".join(ids) + policy.linesep  # type: ignore[attr-defined]


_HEADERS = HeaderRegistry()
_HEADERS.map_to_type("in-reply-to", MsgIdListHeader)
_HEADERS.map_to_type("references", MsgIdListHeader)

# policy.SMTP (CRLF line ends); 78-character folding as RFC 5322 recommends.
OUTBOUND_POLICY: EmailPolicy = SMTP.clone(max_line_length=78, header_factory=_HEADERS)


class CompositionError(ValueError):
    """The message cannot be built as requested (a clear, user-facing reason)."""


class MailAddress(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str
    name: str = ""


class OutgoingAttachment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"
    inline_cid: str | None = None


class MailDraft(BaseModel):
    """Everything needed to build one message."""

    model_config = ConfigDict(extra="forbid")

    sender: MailAddress
    to: list[MailAddress] = Field(min_length=1)
    cc: list[MailAddress] = Field(default_factory=list)
    reply_to: MailAddress | None = None
    subject: str = ""
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    attachments: list[OutgoingAttachment] = Field(default_factory=list)
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = Field(default_factory=list)


def clean_header_value(value: str, field: str) -> str:
    """Collapse line breaks (also Unicode ones) and tabs to spaces; refuse other control characters."""
    flattened = re.sub(r"[\r\n\t\x85\u2028\u2029]+", " ", value)
    if _CONTROL.search(flattened):
        raise CompositionError(f"{field} contains control characters")
    return flattened.strip()


def refuse_encoded_line_breaks(value: str, field: str) -> str:
    """Refuse text that readers would decode into a line break (``=?utf-8?q?a=0D=0ABcc:_x?=``):
    harmless on the wire when sent verbatim, but a forged header in a mail client."""
    if "=?" in value:
        try:
            decoded = str(make_header(decode_header(value)))
        except (ValueError, LookupError, UnicodeError):
            return value  # not decodable: readers show it as it is
        if DECODED_BREAK.search(decoded):
            raise CompositionError(f"{field} contains an encoded line break")
    return value


def safe_filename(name: str) -> str:
    """An attachment name with no path, no control characters and a sane length."""
    name = unicodedata.normalize("NFC", name)
    name = _CONTROL.sub("", re.sub(r"[\x00\x85\u2028\u2029]", "", name))
    name = re.split(r"[\\/]", name)[-1].strip().lstrip(".")
    name = name[:200]
    return name or "attachment"


def _address(addr: MailAddress, field: str) -> Address:
    email = clean_header_value(addr.email, field)
    if email.count("@") != 1:
        raise CompositionError(f"{field}: {email!r} is not an email address")
    local, domain = email.split("@")
    if not local or not domain or any(c in email for c in ' <>(),;:"[]\\'):
        raise CompositionError(f"{field}: {email!r} is not an email address")
    try:
        domain_ascii = domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise CompositionError(f"{field}: invalid domain in {email!r}") from exc
    return Address(
        display_name=clean_header_value(addr.name, f"{field} name"),
        username=local,
        domain=domain_ascii,
    )


def new_message_id(domain: str) -> str:
    return make_msgid(idstring=f"{int(time.time())}.{secrets.token_hex(6)}", domain=domain)


def compose(draft: MailDraft, mail_domain: str) -> EmailMessage:
    """Build the MIME message; raises CompositionError with a clear reason on bad input."""
    msg = EmailMessage(policy=OUTBOUND_POLICY)
    msg["From"] = _address(draft.sender, "from")
    msg["To"] = [_address(a, "to") for a in draft.to]
    if draft.cc:
        msg["Cc"] = [_address(a, "cc") for a in draft.cc]
    if draft.reply_to:
        msg["Reply-To"] = _address(draft.reply_to, "reply-to")
    subject = clean_header_value(draft.subject, "subject")
    if len(subject) > MAX_SUBJECT_CHARS:
        raise CompositionError(f"subject longer than {MAX_SUBJECT_CHARS} characters")
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = draft.message_id or new_message_id(mail_domain)
    if draft.in_reply_to:
        msg["In-Reply-To"] = clean_header_value(draft.in_reply_to, "in-reply-to")
    if draft.references:
        msg["References"] = " ".join(clean_header_value(r, "references") for r in draft.references)
    for name, value in draft.headers.items():
        if not HEADER_NAME.match(name) or name.lower() in RESERVED_HEADERS:
            raise CompositionError(f"header name {name!r} is not allowed")
        msg[name] = clean_header_value(value, f"header {name}")

    text = draft.text if draft.text is not None else ("" if draft.html is None else None)
    if text is not None:
        msg.set_content(text, subtype="plain", cte="quoted-printable")
    if draft.html is not None:
        if text is None:
            msg.set_content(draft.html, subtype="html", cte="quoted-printable")
        else:
            msg.add_alternative(draft.html, subtype="html", cte="quoted-printable")

    total = sum(len(a.content) for a in draft.attachments)
    if total > MAX_ATTACHMENT_BYTES:
        raise CompositionError(
            f"attachments total {total} bytes; the limit is {MAX_ATTACHMENT_BYTES} bytes (5 MB)"
        )
    for attachment in draft.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        if not re.fullmatch(r"[\w.+-]+", maintype) or not re.fullmatch(r"[\w.+-]+", subtype or ""):
            raise CompositionError(f"invalid content type {attachment.content_type!r}")
        filename = safe_filename(attachment.filename)
        if attachment.inline_cid:
            cid = clean_header_value(attachment.inline_cid, "content-id")
            html_part = msg.get_body(("html",))
            if html_part is None:
                raise CompositionError("inline images need an HTML body")
            html_part.add_related(
                attachment.content,
                maintype,
                subtype,
                cid=f"<{cid}>",
                filename=filename,
                disposition="inline",
            )
        else:
            msg.add_attachment(attachment.content, maintype, subtype, filename=filename)
    _refuse_decoded_line_breaks(msg)
    return msg


def _refuse_decoded_line_breaks(msg: EmailMessage) -> None:
    """The stdlib decodes RFC 2047 encoded words in the values it is given (also inside quoted
    display names) and writes the decoded text back out: an ASCII subject or name like
    ``=?utf-8?q?a=0D=0ABcc:_x?=`` would become a real Bcc line. So every header is folded as it
    will be sent, and each line after its first must be a continuation."""
    for part in msg.walk():
        for name, value in part.items():
            try:
                folded = part.policy.fold(name, value)
            except ValueError as exc:  # the stdlib's own refusal of a decoded line break
                raise CompositionError(f"{name.lower()} contains an encoded line break") from exc
            lines = re.split(r"\r\n|\r|\n", folded.rstrip("\r\n"))
            if DECODED_BREAK.search(str(value)) or any(line[:1] not in (" ", "\t") for line in lines[1:]):
                raise CompositionError(f"{name.lower()} contains an encoded line break")
