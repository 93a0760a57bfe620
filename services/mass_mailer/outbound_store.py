"""Queries for transactional outbound messages: acceptance, leases, status transitions.

A lease (owner, until) says which gateway instance works on a row. Claiming is one conditional
UPDATE, so it is safe with several instances on PostgreSQL and on SQLite alike.

Every statement here is SQLAlchemy Core on the table, and rows come back as plain ``Leased``
records: the gateway runs several of these per mail, and the ORM's identity map and unit of
work cost more than the statements themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, bindparam, insert, or_, select, update
from sqlmodel import Session

from services.mass_mailer import suppression
from services.mass_mailer.contacts import is_suppressed
from services.mass_mailer.models import Contact, OutboundMessage, Suppression
from services.mass_mailer.templates.compiled import CompiledTemplate
from services.mass_mailer.templates.models import MailTemplate
from services.mass_mailer.templates.store import compiled_version
from shared.contracts import DeliveryEvent, OutboundEmail
from shared.outbox import enqueue_many
from shared.topics import MAIL_DELIVERY_EVENTS

FINAL = ("sent", "failed")
MESSAGES: Table = OutboundMessage.__table__  # type: ignore[attr-defined]
SUPPRESSIONS: Table = Suppression.__table__  # type: ignore[attr-defined]
CONTACTS: Table = Contact.__table__  # type: ignore[attr-defined]
TEMPLATES: Table = MailTemplate.__table__  # type: ignore[attr-defined]
_c = MESSAGES.c


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Leased:
    """The columns of a leased row the gateway works with (a snapshot, not an ORM entity)."""

    id: int
    correlation_id: str
    payload: str
    status: str
    recipients: str
    message_id_header: str | None
    attempts: int
    next_attempt_at: datetime
    deadline_at: datetime
    lease_owner: str | None
    events_pending: bool
    recipient_status: dict[str, list[str]]
    smtp_code: int | None = None
    enhanced_code: str | None = None
    last_error: str | None = None
    fresh: bool = False  # created by this claim: its payload is the request in hand


_COLUMNS = (
    _c.id, _c.correlation_id, _c.payload, _c.status, _c.recipients, _c.message_id_header, _c.attempts,
    _c.next_attempt_at, _c.deadline_at, _c.lease_owner, _c.events_pending, _c.recipient_status,
    _c.smtp_code, _c.enhanced_code, _c.last_error,
)  # fmt: skip


def _lease_free(moment: Any) -> Any:
    return or_(_c.lease_until.is_(None), _c.lease_until < moment)


# Built once: a statement object that is reused skips SQLAlchemy's per-call construction and
# cache-key work (the compiled form is cached per statement and set of parameter names).
_FIND = select(_c.id).where(_c.correlation_id == bindparam("b_correlation_id"))
_INSERT = insert(MESSAGES)
_CLAIM = update(MESSAGES).where(and_(_c.id == bindparam("b_id"), _lease_free(bindparam("b_moment"))))
_READ = select(*_COLUMNS).where(_c.id == bindparam("b_id"))
# SET gets exactly the columns named in the parameters (beside the b_ ones).
_TRANSITION = update(MESSAGES).where(and_(_c.id == bindparam("b_id"), _c.lease_owner == bindparam("b_token")))
_SUPPRESSIONS = select(SUPPRESSIONS.c.email, SUPPRESSIONS.c.reason)
_FLAGS = select(
    CONTACTS.c.email,
    CONTACTS.c.unsubscribed,
    CONTACTS.c.bounced,
    CONTACTS.c.complained,
    CONTACTS.c.email_opt_out,
)
# A mail has one or a few recipients: an equality per address is cheaper than an expanding IN,
# whose SQL SQLAlchemy renders anew on every execution.
_SUPPRESSION_OF = _SUPPRESSIONS.where(SUPPRESSIONS.c.email == bindparam("b_email"))
_FLAGS_OF = _FLAGS.where(CONTACTS.c.email == bindparam("b_email"))
_SUPPRESSIONS_IN = _SUPPRESSIONS.where(SUPPRESSIONS.c.email.in_(bindparam("b_emails", expanding=True)))
_FLAGS_IN = _FLAGS.where(CONTACTS.c.email.in_(bindparam("b_emails", expanding=True)))
FEW_RECIPIENTS = 8


def accept_and_claim(
    session: Session,
    request: OutboundEmail,
    token: str,
    *,
    deadline_s: float,
    lease_s: float,
    message_id: str | None = None,
) -> Leased | None:
    """The row for ``request.correlation_id`` (created on first sight: idempotency), leased to
    ``token``; None if another claim holds it. A new row is born leased (no second statement),
    and with ``message_id`` already marked ``sending`` (attempt 1 with that Message-ID)."""
    db = session.connection()
    found = db.execute(_FIND, {"b_correlation_id": request.correlation_id}).first()
    if found is not None:
        return claim(session, found[0], token, lease_s)
    arrived = now()
    row = Leased(
        id=0,
        correlation_id=request.correlation_id,
        payload=request.model_dump_json(),
        status="queued" if message_id is None else "sending",
        recipients=",".join([*request.to, *request.cc])[:20_000],
        message_id_header=message_id,
        attempts=0 if message_id is None else 1,
        next_attempt_at=arrived,
        deadline_at=arrived + timedelta(seconds=deadline_s),
        lease_owner=token,
        events_pending=False,
        recipient_status={},
        fresh=True,
    )
    result = db.execute(
        _INSERT,
        {
            "correlation_id": row.correlation_id,
            "payload": row.payload,
            "status": row.status,
            "recipients": row.recipients,
            "subject": request.subject[:2_000],
            "message_id_header": row.message_id_header,
            "attempts": row.attempts,
            "next_attempt_at": arrived,
            "deadline_at": row.deadline_at,
            "lease_owner": token,
            "lease_until": arrived + timedelta(seconds=lease_s),
            "events_pending": False,
            "recipient_status": {},
            "created_at": arrived,
            "updated_at": arrived,
        },
    )
    row.id = result.inserted_primary_key[0]  # type: ignore[index]
    return row


def finish(session: Session, row_id: int, token: str, events: list[DeliveryEvent], **values: Any) -> None:
    """Final (or deferred) statuses, their delivery events in the outbox, and the lease given up."""
    transition(session, row_id, token, events_pending=False, lease_owner=None, lease_until=None, **values)
    enqueue_many(session, MAIL_DELIVERY_EVENTS, [(event, event.correlation_id) for event in events])


def claim(session: Session, row_id: int, token: str, lease_s: float) -> Leased | None:
    """Take the lease on a row unless someone holds it; ``token`` is unique per claim, so two
    tasks of one instance can never both work on a row."""
    moment = now()
    db = session.connection()
    values = {"b_id": row_id, "b_moment": moment, "lease_owner": token}
    result = db.execute(_CLAIM, {**values, "lease_until": moment + timedelta(seconds=lease_s)})
    if result.rowcount != 1:
        return None
    return Leased(*db.execute(_READ, {"b_id": row_id}).one())


def transition(session: Session, row_id: int, token: str, **values: Any) -> None:
    """Change a row whose lease ``token`` holds."""
    values["updated_at"] = now()
    result = session.connection().execute(_TRANSITION, {"b_id": row_id, "b_token": token, **values})
    if result.rowcount != 1:
        raise LeaseLost(f"outbound message {row_id} is no longer leased by {token}")


class LeaseLost(RuntimeError):
    """Another instance took the row over (this one was too slow): stop working on it."""


def due(session: Session, limit: int = 100) -> list[int]:
    """Rows the sweeper should look at: due retries, events to publish, orphans of dead instances."""
    moment = now()
    retry_due = and_(_c.status.in_(("queued", "deferred")), _c.next_attempt_at <= moment)
    orphaned = _c.status.in_(("sending", "handed_over"))
    query = (
        select(_c.id)
        .where(_lease_free(moment), or_(retry_due, orphaned, _c.events_pending))
        .order_by(_c.next_attempt_at)
        .limit(limit)
    )
    return [row_id for (row_id,) in session.execute(query).all() if row_id is not None]


_TEMPLATE_STATE = select(TEMPLATES.c.deleted, TEMPLATES.c.active, TEMPLATES.c.current_version_id).where(
    TEMPLATES.c.id == bindparam("b_id")
)


def current_template(session: Session, template_id: int) -> CompiledTemplate | None:
    """``templates.store.current_version`` without loading the template's design: the latest
    version of an active, not deleted template (compiled, cached per process); None otherwise."""
    found = session.connection().execute(_TEMPLATE_STATE, {"b_id": template_id}).first()
    if found is None or found.deleted or not found.active or found.current_version_id is None:
        return None
    return compiled_version(session, found.current_version_id)


def suppressed(session: Session, emails: list[str]) -> dict[str, str]:
    """Which of ``emails`` must not be mailed, and why (suppression list, then contact flags)."""
    if not emails:
        return {}
    lowered = {e.lower(): e for e in emails}
    keys = suppression.lookup_keys(lowered)  # the address, and its hash (erased contacts)
    found: dict[str, str] = {}
    db = session.connection()
    if len(lowered) <= FEW_RECIPIENTS:
        listed = [row for key in keys for row in db.execute(_SUPPRESSION_OF, {"b_email": key})]
        contacts = [row for email in lowered for row in db.execute(_FLAGS_OF, {"b_email": email})]
    else:
        listed = list(db.execute(_SUPPRESSIONS_IN, {"b_emails": list(keys)}))
        contacts = list(db.execute(_FLAGS_IN, {"b_emails": list(lowered)}))
    for key, reason in listed:
        found[lowered[keys[key]]] = reason
    for contact in contacts:
        original = lowered.get(contact.email or "")
        if original is not None and original not in found and (reason := is_suppressed(contact)):  # type: ignore[arg-type]
            found[original] = reason
    return found
