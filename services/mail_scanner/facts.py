"""The facts the engine needs from a parsed mail, read tolerantly from ``ParsedMail``.

The parser's model grows independently; this is the one place that knows its field names.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from services.mail_scanner import references
from services.mail_scanner.parsing import parse_message
from services.mail_scanner.rules import MailView


@dataclass
class AttachmentFact:
    filename: str
    content_type: str
    size: int
    sha256: str
    content: bytes | None


@dataclass
class MailFacts:
    from_email: str = ""
    from_name: str = ""
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    subject: str = ""
    date: str | None = None
    message_id: str | None = None
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    text: str = ""
    reply_text: str = ""
    html: str | None = None
    attachments: list[AttachmentFact] = field(default_factory=list)
    kind: str = "normal"
    bounce: dict[str, Any] | None = None
    ticket_number: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    size: int = 0
    error: str | None = None
    raw_sha256: str = ""  # of the raw bytes, when computed with the parse (parse_for_import)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    def view(self) -> MailView:
        return MailView(
            from_=self.from_email,
            to=self.to,
            cc=self.cc,
            subject=self.subject,
            body=self.text,
            headers=self.headers,
        )


def _emails(values: Any) -> list[str]:
    found: list[str] = []
    for value in values or []:
        email = value if isinstance(value, str) else getattr(value, "email", None)
        if email and "@" in email:
            found.append(email.strip().lower()[:320])
    return found


def _ids(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    return [v for v in value or [] if isinstance(v, str)]


def facts_from(parsed: Any, prefix: str, numbered: bool = False) -> MailFacts:
    """``numbered``: the parser already looked for ticket numbers with ``prefix``."""
    facts = MailFacts(size=int(getattr(parsed, "size", 0) or 0))
    facts.from_email = (getattr(parsed, "from_email", None) or "").lower()
    facts.from_name = getattr(parsed, "from_display_name", None) or ""
    if not facts.from_email:
        senders = getattr(parsed, "from_", None) or []
        if senders:
            facts.from_email = _emails(senders[:1])[0] if _emails(senders[:1]) else ""
            facts.from_name = getattr(senders[0], "name", "") or ""
    facts.to = _emails(getattr(parsed, "to", []))
    facts.cc = _emails(getattr(parsed, "cc", []))
    facts.subject = getattr(parsed, "subject", "") or ""
    date = getattr(parsed, "date", None)
    facts.date = date.isoformat() if hasattr(date, "isoformat") else date
    facts.message_id = getattr(parsed, "message_id", None)
    facts.in_reply_to = _ids(getattr(parsed, "in_reply_to", []))
    facts.references = _ids(getattr(parsed, "references", []))
    facts.text = getattr(parsed, "text", "") or ""
    facts.reply_text = getattr(parsed, "reply_text", None) or facts.text
    facts.html = getattr(parsed, "html", None)
    for item in getattr(parsed, "attachments", []) or []:
        content = getattr(item, "content", None)
        digest = getattr(item, "sha256", None) or (hashlib.sha256(content).hexdigest() if content else "")
        facts.attachments.append(
            AttachmentFact(
                filename=getattr(item, "filename", "attachment"),
                content_type=getattr(item, "content_type", "application/octet-stream"),
                size=int(getattr(item, "size", 0) or 0),
                sha256=digest,
                content=content if isinstance(content, bytes) else None,
            )
        )
    facts.kind = getattr(parsed, "kind", "normal") or "normal"
    bounce = getattr(parsed, "bounce", None)
    if bounce is not None and not isinstance(bounce, dict):
        bounce = bounce.model_dump() if hasattr(bounce, "model_dump") else dict(vars(bounce))
    facts.bounce = bounce
    facts.headers = [(str(k), str(v)) for k, v in getattr(parsed, "headers", []) or []]
    facts.error = getattr(parsed, "error", None)
    number = getattr(parsed, "ticket_number", None)
    if number or numbered:
        facts.ticket_number = number
    else:
        facts.ticket_number = references.ticket_number_from(facts.subject, facts.text, prefix)
    return facts


def parse(raw: bytes, prefix: str) -> MailFacts:
    return facts_from(parse_message(raw, ticket_prefix=prefix), prefix, numbered=True)


def parse_for_import(raw: bytes, prefix: str) -> MailFacts:
    """``parse`` plus the raw mail's sha256: all the CPU work of an import that needs no
    database, so it can run in a worker process (the result pickles)."""
    facts = parse(raw, prefix)
    facts.raw_sha256 = hashlib.sha256(raw).hexdigest()
    return facts


def fingerprint(facts: MailFacts, raw: bytes) -> str:
    """Message-ID + Date + size hash: the identity of a mail across UIDVALIDITY changes (mail
    without a Message-ID is identified by its bytes instead)."""
    identity = facts.message_id or facts.raw_sha256 or hashlib.sha256(raw).hexdigest()
    key = f"{identity}\x00{facts.date or ''}\x00{len(raw)}"
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()
