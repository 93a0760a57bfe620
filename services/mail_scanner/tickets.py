"""Tickets and comments: creation from mail, follow-ups, agent replies, status changes.

Every change enqueues its ``helpdesk.ticket-events`` (and outbound mail) in the caller's
transaction through the outbox.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from services.mail_scanner import references, threads
from services.mail_scanner.batch import Batch, CommentRef, NewTicket, current, ticket_event
from services.mail_scanner.facts import MailFacts
from services.mail_scanner.models import (
    AutoAck,
    ScannerAccount,
    ScannerSecret,
    Ticket,
    TicketComment,
)
from services.mail_scanner.rules import Decision
from shared.contracts.mail import OutboundEmail
from shared.outbox import enqueue
from shared.secretbox import SecretBox
from shared.timeutil import as_utc
from shared.topics import HELPDESK_TICKET_EVENTS, MAIL_OUTBOUND_TRANSACTIONAL

if TYPE_CHECKING:
    from services.mail_scanner.intake import Engine

_VALID_MSGID = re.compile(r"^<[\x21-\x3b\x3d\x3f-\x7e]{1,900}>$")
MAX_BODY_CHARS = 1_000_000


def now() -> datetime:
    return datetime.now(UTC)


def signing_secret(session: Session, box: SecretBox) -> bytes:
    """The Message-ID HMAC key: generated once, stored encrypted, shared by all instances."""
    row = session.get(ScannerSecret, "message_id_hmac")
    if row is None:
        try:
            with session.begin_nested():
                session.add(
                    ScannerSecret(name="message_id_hmac", value_enc=box.encrypt(secrets.token_bytes(32)))
                )
        except IntegrityError:
            pass
        row = session.get(ScannerSecret, "message_id_hmac", populate_existing=True)
    assert row is not None
    return box.decrypt(row.value_enc)


def emit(session: Session, ticket: Ticket, kind: str, comment_id: int | None = None, stamp: str = "") -> None:
    event = ticket_event(ticket, kind, comment_id, stamp, ticket.status)
    enqueue(session, HELPDESK_TICKET_EVENTS, event, key=ticket.number)


def find_ticket_for(
    session: Session, engine: Engine, facts: MailFacts
) -> tuple[Ticket | NewTicket | None, str | None]:
    """The ticket a mail follows up, and a note when a reference was not accepted.

    In this order (``threads.follow_up``): one of our signed Message-IDs; the ticket number,
    from the requester or a CC of the ticket; a stored Message-ID of an incoming mail, from
    someone on that ticket."""
    batch = current(session)
    found = threads.follow_up(
        lambda: _by_signed_id(session, engine, facts),
        lambda: _by_number(session, batch, facts),
        lambda: _by_stored_id(session, engine, batch, facts),
    )
    if found.ticket is not None:
        return _live(session, found.ticket), None
    if found.refused_number is not None:
        return None, (
            f"The mail refers to ticket {found.refused_number.number}, but its sender is neither the "
            "requester nor a CC address of that ticket, so a new ticket was opened."
        )
    if found.refused_reference is not None:
        refused = found.refused_reference
        if refused.number is None and batch is not None:
            batch.flush_tickets(session)  # a ticket of this batch gets its number now
        return None, (
            f"The mail replies to a mail of ticket {refused.number}, but its sender is not on that "
            "ticket (requester, CC or author of an article), so a new ticket was opened."
        )
    return None, None


def _by_signed_id(session: Session, engine: Engine, facts: MailFacts) -> Ticket | None:
    ticket_id = references.ticket_from_message_ids(
        facts.references + facts.in_reply_to, engine.secret, engine.settings.mail_domain
    )
    return session.get(Ticket, ticket_id) if ticket_id is not None else None


def _by_number(session: Session, batch: Batch | None, facts: MailFacts) -> tuple[Ticket | None, bool]:
    if not facts.ticket_number:
        return None, False
    if batch is not None:  # the batch's new tickets get their numbers now
        batch.flush_tickets(session)
    ticket = batch.ticket_by_number(session, facts.ticket_number) if batch is not None else None
    ticket = (
        ticket or session.exec(select(Ticket).where(Ticket.number == facts.ticket_number.upper())).first()
    )
    if ticket is None:
        ticket = session.exec(select(Ticket).where(Ticket.number == facts.ticket_number)).first()
    if ticket is None:
        return None, False
    return ticket, facts.from_email == ticket.requester_email or facts.from_email in ticket.cc


def _by_stored_id(
    session: Session, engine: Engine, batch: Batch | None, facts: MailFacts
) -> tuple[Ticket | NewTicket | None, Ticket | NewTicket | None]:
    """The most recent ticket holding an incoming mail the follow-up names whose sender is on
    it, else (None, the first ticket refused)."""
    keys = threads.reference_order(facts.in_reply_to, facts.references)
    if not keys:
        return None, None
    if batch is None:  # outside an import (the rules' dry run): a batch only as a read cache
        batch = Batch(account_id=0, prefix=engine.prefix, start=engine.settings.scanner_ticket_start)
    stored = batch.stored_tickets(session, keys)
    candidates: dict[str, list[Ticket | NewTicket]] = {}
    budget = threads.MAX_CANDIDATES  # an id shared by thousands of tickets costs no more
    for key in keys:
        if budget <= 0:
            break
        ranked = threads.most_recent_first(
            batch.new_refs.get(key, ()), lambda t: t.id, stored.get(key, ()), budget
        )
        found = [
            session.get(Ticket, item) if isinstance(item, int) else _live(session, item) for item in ranked
        ]
        candidates[key] = [t for t in found if t is not None]
        budget -= len(candidates[key])
    return threads.pick(keys, candidates, lambda t: _on_ticket(session, batch, t, facts.from_email))


def _on_ticket(session: Session, batch: Batch, ticket: Ticket | NewTicket, sender: str) -> bool:
    if threads.may_write(sender, ticket.requester_email, ticket.cc):
        return True
    articles: list[tuple[str, list[str] | None]] = [
        (ref.row["author_email"], ref.row["cc"])
        for ref in batch.comments
        if ref.ticket is ticket or (ticket.id is not None and ref.ticket.id == ticket.id)
    ]
    if ticket.id is not None:
        articles += [
            (author, cc)
            for author, cc in session.execute(
                select(TicketComment.author_email, TicketComment.cc).where(
                    TicketComment.ticket_id == ticket.id
                )
            ).all()
        ]
    return threads.may_write(sender, ticket.requester_email, ticket.cc, articles)


def _live(session: Session, ticket: Ticket | NewTicket) -> Ticket | NewTicket:
    """A new ticket of this batch that is already written is changed through its row."""
    if isinstance(ticket, NewTicket) and ticket.id is not None:
        row = session.get(Ticket, ticket.id)
        if row is not None:
            return row
    return ticket


def _attachments(batch: Batch, facts: MailFacts) -> list[dict[str, Any]]:
    stored = []
    for item in facts.attachments[:200]:
        if item.content is not None and item.sha256:
            batch.blob(item.content, item.sha256)
        stored.append(
            {
                "filename": item.filename,
                "content_type": item.content_type,
                "size": item.size,
                "sha256": item.sha256,
            }
        )
    return stored


def _cc_of(engine: Engine, account: ScannerAccount, facts: MailFacts) -> list[str]:
    ours = engine.own_addresses(account) | {account.username.lower()}
    return [a for a in dict.fromkeys(facts.cc) if a not in ours and a != facts.from_email][:100]


def _apply_fields(ticket: Ticket | NewTicket, decision: Decision) -> None:
    for name, value in decision.fields.items():
        if name != "status":
            setattr(ticket, name, value)


def import_mail(
    session: Session,
    engine: Engine,
    account: ScannerAccount,
    facts: MailFacts,
    raw: bytes,
    decision: Decision,
) -> tuple[str, int, Decision, CommentRef]:
    """Create a ticket or add a comment; returns (outcome, events, decision, the comment).

    Inside an import batch (``batch.current``) the rows are written when the batch finishes
    (the comment's ids are known then); without one, at once."""
    batch = current(session)
    if batch is None:
        batch = Batch(
            account_id=account.id or 0, prefix=engine.prefix, start=engine.settings.scanner_ticket_start
        )
        session.info["ms_batch"] = batch
        try:
            found = import_mail(session, engine, account, facts, raw, decision)
            batch.finish(session, acknowledger(engine, batch))
            return found
        finally:
            session.info.pop("ms_batch", None)
    raw_digest = batch.blob(raw, facts.raw_sha256 or hashlib.sha256(raw).hexdigest())
    ticket, note = (None, None) if decision.ticket == "create" else find_ticket_for(session, engine, facts)
    created = ticket is None
    if ticket is None:
        requester = batch.requester(session, facts.from_email)
        ticket = NewTicket(
            account_id=account.id,
            subject=(references.strip_reply_prefixes(facts.subject) or "(no subject)")[:2_000],
            requester_email=facts.from_email,
            requester_name=(facts.from_name or (requester.name if requester else ""))[:500],
            requester_contact_id=requester.contact_id if requester else None,
            cc=_cc_of(engine, account, facts),
            note=note,
        )
        batch.new_ticket(ticket)
    else:
        for address in _cc_of(engine, account, facts):
            if address not in ticket.cc and address != ticket.requester_email:
                ticket.cc = [*ticket.cc, address][:100]
    old_status = ticket.status
    _apply_fields(ticket, decision)
    if "status" in decision.fields:
        ticket.status = decision.fields["status"]
    elif not created and ticket.status == "closed" and engine.settings.scanner_reopen_closed:
        ticket.status = "open"
    if facts.message_id and _VALID_MSGID.match(facts.message_id):
        ticket.last_message_id = facts.message_id
    message_key = threads.message_key(facts.message_id)
    if message_key is not None:
        batch.remember_ref(message_key, ticket)
    moment = now()
    ticket.updated_at = moment
    if isinstance(ticket, Ticket):
        session.add(ticket)
    row = {
        "direction": "in",
        "author_email": facts.from_email,
        "author_name": facts.from_name[:500],
        "message_id": (facts.message_id or None) and facts.message_id[:998],
        "message_key": message_key,
        "subject": facts.subject[:2_000],
        "text": facts.text[:MAX_BODY_CHARS],
        "reply_text": facts.reply_text[:MAX_BODY_CHARS],
        "html": facts.html[:MAX_BODY_CHARS] if facts.html else None,
        "attachments": _attachments(batch, facts),
        "cc": facts.cc[:100],
        "raw_sha256": raw_digest,
        "created_at": moment,
    }
    changed = not created and ticket.status != old_status
    ref = CommentRef(ticket, row, created, ticket.status, changed, facts if created else None)
    batch.comments.append(ref)
    events = 1 + int(changed)
    return ("ticket_created" if created else "comment_added"), events, decision, ref


def acknowledger(engine: Engine, batch: Batch) -> Callable[[Session, Any, Any], int]:
    """What a batch calls for each new ticket: the optional auto-acknowledgement."""
    return lambda session, ticket, facts: _auto_ack(session, engine, ticket, batch)


def _auto_ack(session: Session, engine: Engine, ticket: Ticket | NewTicket, batch: Batch) -> int:
    settings = engine.settings
    if not settings.scanner_auto_ack:
        return 0
    row = batch.acks.get(ticket.requester_email) or session.get(AutoAck, ticket.requester_email)
    moment = now()
    if row is not None and as_utc(row.last_sent_at) > moment - timedelta(
        seconds=settings.scanner_auto_ack_interval_s
    ):
        return 0
    body = (
        f"Thank you for your message. We opened ticket {ticket.number} and will answer soon.\n\n"
        f"{references.body_marker(ticket.number or '')}\n"
    )
    try:
        email = OutboundEmail(
            correlation_id=f"ms-ack-{ticket.id}",
            to=[ticket.requester_email],
            subject=f"[{ticket.number}] {ticket.subject}"[:2_000],
            text=body,
            message_id_header=references.make_message_id(
                ticket.id or 0, None, engine.secret, settings.mail_domain
            ),
            in_reply_to=ticket.last_message_id,
            references=[ticket.last_message_id] if ticket.last_message_id else [],
            headers={settings.scanner_loop_header: settings.mail_domain, "Auto-Submitted": "auto-replied"},
            sender_identity=settings.scanner_sender_identity,
            source="mail_scanner",
        )
    except ValueError:
        return 0
    if row is None:
        row = AutoAck(email=ticket.requester_email, last_sent_at=moment)
    row.last_sent_at = moment
    session.add(row)
    batch.acks[ticket.requester_email] = row
    enqueue(session, MAIL_OUTBOUND_TRANSACTIONAL, email, key=email.correlation_id)
    return 1


def set_status(session: Session, ticket: Ticket, status: str) -> bool:
    if ticket.status == status:
        return False
    ticket.status = status
    ticket.updated_at = now()
    session.add(ticket)
    emit(session, ticket, "ticket.status_changed", None, f"{status}:{uuid.uuid4().hex}")
    return True


def agent_reply(
    session: Session,
    engine: Engine,
    ticket: Ticket,
    *,
    text: str,
    html: str | None,
    author_email: str,
    author_name: str,
    status: str | None,
) -> tuple[TicketComment, OutboundEmail]:
    """Store an agent's reply as a comment and queue it as mail to the requester and the CCs."""
    settings = engine.settings
    comment = TicketComment(
        ticket_id=ticket.id,  # type: ignore[arg-type]
        direction="out",
        author_email=author_email,
        author_name=author_name,
        subject=f"[{ticket.number}] {ticket.subject}"[:2_000],
        text=text,
        reply_text=text,
        html=html,
        cc=list(ticket.cc),
    )
    session.add(comment)
    session.flush()
    message_id = references.make_message_id(ticket.id or 0, comment.id, engine.secret, settings.mail_domain)
    comment.message_id = message_id
    earlier = session.exec(
        select(TicketComment.message_id)
        .where(
            TicketComment.ticket_id == ticket.id,
            col(TicketComment.message_id).is_not(None),
            TicketComment.id != comment.id,
        )
        .order_by(col(TicketComment.id))
    ).all()
    refs = [m for m in earlier if m and _VALID_MSGID.match(m)][-20:]
    marker = references.body_marker(ticket.number or "")
    email = OutboundEmail(
        correlation_id=f"ms-reply-{comment.id}",
        sender_identity=settings.scanner_sender_identity,
        to=[ticket.requester_email],
        cc=[a for a in ticket.cc if a != ticket.requester_email],
        message_id_header=message_id,
        in_reply_to=ticket.last_message_id
        if ticket.last_message_id and _VALID_MSGID.match(ticket.last_message_id)
        else None,
        references=refs,
        subject=f"[{ticket.number}] {ticket.subject}"[:2_000],
        text=f"{text}\n\n{marker}\n",
        html=f'{html}<p style="color:#999;font-size:10px">{marker}</p>' if html else None,
        headers={settings.scanner_loop_header: settings.mail_domain},
        source="mail_scanner",
    )
    enqueue(session, MAIL_OUTBOUND_TRANSACTIONAL, email, key=email.correlation_id)
    ticket.updated_at = now()
    session.add(ticket)
    session.add(comment)
    emit(session, ticket, "ticket.comment_added", comment.id)
    if status:
        set_status(session, ticket, status)
    return comment, email
