"""Queries for transactional outbound messages: acceptance, leases, status transitions.

A lease (owner, until) says which gateway instance works on a row. Claiming is one conditional
UPDATE, so it is safe with several instances on PostgreSQL and on SQLite alike.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, update
from sqlmodel import Session, col, select

from services.mass_mailer.contacts import is_suppressed
from services.mass_mailer.models import Contact, OutboundMessage, Suppression
from shared.contracts import DeliveryEvent, OutboundEmail
from shared.outbox import enqueue
from shared.topics import MAIL_DELIVERY_EVENTS

FINAL = ("sent", "failed")


def now() -> datetime:
    return datetime.now(UTC)


def accept_and_claim(
    session: Session, request: OutboundEmail, token: str, *, deadline_s: float, lease_s: float
) -> OutboundMessage | None:
    """The row for ``request.correlation_id`` (created on first sight: idempotency), leased to
    ``token``; None if another claim holds it. A new row is born leased (no second statement)."""
    row = session.exec(
        select(OutboundMessage).where(OutboundMessage.correlation_id == request.correlation_id)
    ).first()
    if row is not None:
        return claim(session, row.id, token, lease_s)  # type: ignore[arg-type]
    arrived = now()
    row = OutboundMessage(
        correlation_id=request.correlation_id,
        payload=request.model_dump_json(),
        recipients=",".join([*request.to, *request.cc])[:20_000],
        subject=request.subject[:2_000],
        next_attempt_at=arrived,
        deadline_at=arrived + timedelta(seconds=deadline_s),
        created_at=arrived,
        updated_at=arrived,
        lease_owner=token,
        lease_until=arrived + timedelta(seconds=lease_s),
    )
    session.add(row)
    session.flush()
    return row


def finish(session: Session, row_id: int, token: str, events: list[DeliveryEvent], **values: Any) -> None:
    """Final (or deferred) statuses, their delivery events in the outbox, and the lease given up."""
    transition(session, row_id, token, events_pending=False, lease_owner=None, lease_until=None, **values)
    for event in events:
        enqueue(session, MAIL_DELIVERY_EVENTS, event, key=event.correlation_id)


def claim(session: Session, row_id: int, token: str, lease_s: float) -> OutboundMessage | None:
    """Take the lease on a row unless someone holds it; ``token`` is unique per claim, so two
    tasks of one instance can never both work on a row."""
    moment = now()
    result = session.execute(
        update(OutboundMessage)
        .where(
            and_(
                col(OutboundMessage.id) == row_id,
                or_(col(OutboundMessage.lease_until).is_(None), col(OutboundMessage.lease_until) < moment),
            )
        )
        .values(lease_owner=token, lease_until=moment + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    session.flush()
    row = session.get(OutboundMessage, row_id, populate_existing=True)
    return row


def transition(session: Session, row_id: int, token: str, **values: Any) -> None:
    """Change a row whose lease ``token`` holds."""
    values["updated_at"] = now()
    result = session.execute(
        update(OutboundMessage)
        .where(and_(col(OutboundMessage.id) == row_id, col(OutboundMessage.lease_owner) == token))
        .values(**values)
        .execution_options(synchronize_session=False)  # rows are re-read where needed
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(f"outbound message {row_id} is no longer leased by {token}")


class LeaseLost(RuntimeError):
    """Another instance took the row over (this one was too slow): stop working on it."""


def due(session: Session, limit: int = 100) -> list[int]:
    """Rows the sweeper should look at: due retries, events to publish, orphans of dead instances."""
    moment = now()
    lease_free = or_(col(OutboundMessage.lease_until).is_(None), col(OutboundMessage.lease_until) < moment)
    retry_due = and_(
        col(OutboundMessage.status).in_(("queued", "deferred")),
        col(OutboundMessage.next_attempt_at) <= moment,
    )
    orphaned = col(OutboundMessage.status).in_(("sending", "handed_over"))
    query = (
        select(OutboundMessage.id)
        .where(lease_free, or_(retry_due, orphaned, col(OutboundMessage.events_pending)))
        .order_by(col(OutboundMessage.next_attempt_at))
        .limit(limit)
    )
    return [row_id for row_id in session.exec(query).all() if row_id is not None]


def suppressed(session: Session, emails: list[str]) -> dict[str, str]:
    """Which of ``emails`` must not be mailed, and why (suppression list, then contact flags)."""
    lowered = {e.lower(): e for e in emails}
    found: dict[str, str] = {}
    for row in session.exec(select(Suppression).where(col(Suppression.email).in_(list(lowered)))).all():
        found[lowered[row.email]] = row.reason
    for contact in session.exec(select(Contact).where(col(Contact.email).in_(list(lowered)))).all():
        original = lowered.get(contact.email or "")
        if original is not None and original not in found and (reason := is_suppressed(contact)):
            found[original] = reason
    return found
