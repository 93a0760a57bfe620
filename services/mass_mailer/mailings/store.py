"""Queries of the mailing pipeline: mailings, freezing, claims, results, sweeps, progress.

Every step that several instances could race on is one conditional UPDATE (status or lease in
the WHERE clause), so it is safe on PostgreSQL and on SQLite (where one writer runs at a time).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.partitioner import murmur2
from sqlalchemy import bindparam, func, insert, or_, update
from sqlmodel import Session, col, select

from services.mass_mailer import suppression
from services.mass_mailer.audience.models import TargetGroupMember
from services.mass_mailer.contacts import SUPPRESSION_FLAGS, is_suppressed
from services.mass_mailer.mailings.links import correlation_id
from services.mass_mailer.mailings.models import Delivery, Mailing
from services.mass_mailer.models import Contact, Suppression
from shared.contracts import BulkBatch, BulkRecipient, DeliveryEvent, DeliveryStatus
from shared.outbox import enqueue
from shared.topics import MAIL_DELIVERY_EVENTS, MAIL_OUTBOUND_BULK

FREEZE_PAGE = 1_000
DELIVERIES = Delivery.__table__  # Core statements for the hot writes: no ORM bookkeeping
OPEN = ("queued", "sending", "handed_over", "deferred")
FINAL_MAILING = ("completed", "cancelled")


class LeaseLost(Exception):
    """Another scheduler instance took over the mailing being planned."""


def now() -> datetime:
    return datetime.now(UTC)


# -- batches ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batching:
    size: int  # recipients per BulkBatch message
    partitions: int  # of mail.outbound.bulk (as created by us)


def batch_key(mailing_id: int, number: int, partitions: int) -> str:
    """A key that Kafka's default partitioner (murmur2, as aiokafka's) puts on partition
    ``number % partitions``: a mailing's batches go round-robin over the partitions, so every
    sender gets an even share (hashing plain "mailing-number" keys gave one of two senders 28
    of 50 batches and left it sending alone at the end). The recipients of one batch stay
    together; on a topic with another partition count the keys are merely random."""
    target = number % partitions
    for salt in range(64 * partitions):
        key = f"{mailing_id}-{number}.{salt}"
        if (murmur2(key.encode()) & 0x7FFFFFFF) % partitions == target:
            return key
    return f"{mailing_id}-{number}"


def publish_batches(
    session: Session, mailing: Mailing, rows: list[tuple[int, str, str]], batching: Batching
) -> int:
    """Enqueue BulkBatch messages (outbox) for (delivery id, contact id, email) rows."""
    count = 0
    for start in range(0, len(rows), batching.size):
        chunk = rows[start : start + batching.size]
        batch = BulkBatch(
            mailing_id=mailing.id,  # type: ignore[arg-type]
            template_version_id=mailing.template_version_id or 0,
            recipients=[BulkRecipient(delivery_id=d, contact_id=c, email=e) for d, c, e in chunk],
        )
        mailing.batches += 1
        key = batch_key(mailing.id or 0, mailing.batches, batching.partitions)
        enqueue(session, MAIL_OUTBOUND_BULK, batch, key=key)
        count += 1
    return count


# -- scheduler --------------------------------------------------------------------------------


def start_due(session: Session) -> list[int]:
    """Scheduled mailings whose time has come become ``sending`` (membership freezing starts)."""
    moment = now()
    due = session.exec(
        select(Mailing.id).where(Mailing.status == "scheduled", col(Mailing.scheduled_at) <= moment)
    ).all()
    started = []
    for mailing_id in due:
        hit = session.execute(
            update(Mailing)
            .where(col(Mailing.id) == mailing_id, col(Mailing.status) == "scheduled")
            .values(status="sending", started_at=moment, updated_at=moment)
        )
        if hit.rowcount:  # type: ignore[attr-defined]
            started.append(mailing_id)
    return [m for m in started if m is not None]


def plannable(session: Session) -> list[int]:
    """Sending mailings with membership left to freeze or queued deliveries to publish again."""
    rows = session.exec(
        select(Mailing.id).where(
            Mailing.status == "sending",
            or_(col(Mailing.frozen).is_(False), col(Mailing.requeue_cursor).is_not(None)),
        )
    ).all()
    return [r for r in rows if r is not None]


def claim_plan(session: Session, mailing_id: int, token: str, lease_s: float) -> bool:
    moment = now()
    hit = session.execute(
        update(Mailing)
        .where(
            col(Mailing.id) == mailing_id,
            col(Mailing.status) == "sending",
            or_(
                col(Mailing.plan_until).is_(None),
                col(Mailing.plan_until) < moment,
                col(Mailing.plan_owner) == token,
            ),
        )
        .values(plan_owner=token, plan_until=moment + timedelta(seconds=lease_s))
    )
    return bool(hit.rowcount)  # type: ignore[attr-defined]


def _owned(session: Session, mailing_id: int, token: str) -> Mailing:
    mailing = session.get(Mailing, mailing_id)
    if mailing is None or mailing.plan_owner != token or mailing.status != "sending":
        raise LeaseLost(mailing_id)
    return mailing


CLAIM_FIELDS = ("first_name", "last_name", "language", "custom_fields", *SUPPRESSION_FLAGS)


def suppressed_addresses(session: Session, emails: list[str]) -> set[str]:
    """The lower-cased addresses among ``emails`` on the suppression list (as themselves, or as
    the hash kept when their contact was erased)."""
    keys = suppression.lookup_keys(emails)
    listed = session.exec(select(Suppression.email).where(col(Suppression.email).in_(list(keys)))).all()
    return {keys[key] for key in listed}


def suppression_reason(contact: Any, suppressed: set[str]) -> str | None:
    """Why ``contact`` (a Contact or a row with its email and flag columns) must not get mail."""
    if flag := is_suppressed(contact):
        return flag
    if contact.email and contact.email.lower() in suppressed:
        return "suppression list"
    return None


def freeze_page(session: Session, mailing_id: int, token: str, batching: Batching) -> bool:
    """Freeze the next keyset page of members into delivery records and publish their batches.
    Returns True when the whole membership is frozen."""
    mailing = _owned(session, mailing_id, token)
    cursor = mailing.freeze_cursor or ""
    columns = [getattr(Contact, name) for name in ("contact_id", "email", *SUPPRESSION_FLAGS)]
    page = session.execute(
        select(*columns)
        .join(TargetGroupMember, col(TargetGroupMember.contact_id) == col(Contact.contact_id))
        .where(TargetGroupMember.target_group_id == mailing.target_group_id, col(Contact.contact_id) > cursor)
        .order_by(col(Contact.contact_id))
        .limit(FREEZE_PAGE)
    ).all()
    suppressed = suppressed_addresses(session, [c.email for c in page if c.email])
    moment = now()
    values: list[dict[str, Any]] = []
    for contact in page:
        if not contact.email:
            continue  # not a member for mail purposes
        why = suppression_reason(contact, suppressed)
        values.append(
            {
                "mailing_id": mailing_id,
                "contact_id": contact.contact_id,
                "email": contact.email,
                "status": "failed" if why else "queued",
                "attempts": 0,
                "last_reply": f"not sent: {why}" if why else None,
                "queued_at": moment,
                "updated_at": moment,
            }
        )
    if values:
        session.execute(insert(DELIVERIES), values)
        queued = session.exec(
            select(Delivery.id, Delivery.contact_id, Delivery.email)
            .where(
                Delivery.mailing_id == mailing_id,
                Delivery.status == "queued",
                col(Delivery.contact_id).in_([v["contact_id"] for v in values]),
            )
            .order_by(col(Delivery.id))
        ).all()
        publish_batches(session, mailing, [(d, c, e) for d, c, e in queued if d and e], batching)
    done = len(page) < FREEZE_PAGE
    if page:
        mailing.freeze_cursor = page[-1].contact_id
    mailing.frozen = done
    mailing.updated_at = moment
    session.add(mailing)
    return done


def requeue_page(session: Session, mailing_id: int, token: str, batching: Batching) -> bool:
    """After a resume: publish the still-queued deliveries again (keyset over ids). Senders claim
    rows before sending, so a row that is in Kafka twice is still sent once."""
    mailing = _owned(session, mailing_id, token)
    cursor = mailing.requeue_cursor or 0
    rows = session.exec(
        select(Delivery.id, Delivery.contact_id, Delivery.email)
        .where(Delivery.mailing_id == mailing_id, Delivery.status == "queued", col(Delivery.id) > cursor)
        .order_by(col(Delivery.id))
        .limit(FREEZE_PAGE)
    ).all()
    publish_batches(session, mailing, [(d, c, e) for d, c, e in rows if d and e], batching)
    done = len(rows) < FREEZE_PAGE
    mailing.requeue_cursor = None if done else rows[-1][0]
    session.add(mailing)
    return done


def release_plan(session: Session, mailing_id: int, token: str) -> None:
    session.execute(
        update(Mailing)
        .where(col(Mailing.id) == mailing_id, col(Mailing.plan_owner) == token)
        .values(plan_owner=None, plan_until=None)
    )


def sweep(session: Session, batching: Batching) -> int:
    """Due retries and deliveries of crashed senders go out again; returns rows requeued.

    ``handed_over`` rows whose sender died count as sent (the relay has them); ``sending`` rows
    whose lease expired never reached the final dot and are queued again.
    """
    moment = now()
    recent = or_(
        col(Mailing.status).in_(("sending", "paused")), col(Mailing.finished_at) > moment - timedelta(days=1)
    )
    live = [m for m in session.exec(select(Mailing.id).where(recent)).all() if m]
    if not live:
        return 0
    session.execute(
        update(Delivery)
        .where(
            col(Delivery.mailing_id).in_(live),
            col(Delivery.status) == "handed_over",
            col(Delivery.lease_until) < moment,
        )
        .values(
            status="sent",
            sent_at=moment,
            updated_at=moment,
            lease_owner=None,
            lease_until=None,
            last_reply="assumed delivered: handed over before the sender stopped",
        )
    )
    active = [m for m in session.exec(select(Mailing.id).where(Mailing.status == "sending")).all() if m]
    due = {  # one narrow (mailing_id, status) index range per case
        "deferred": col(Delivery.next_attempt_at) <= moment,
        "sending": col(Delivery.lease_until) < moment,
    }
    candidates: list[Any] = []
    ids: list[int] = []
    for status, condition in due.items():
        rows = session.exec(
            select(Delivery.id, Delivery.mailing_id, Delivery.contact_id, Delivery.email)
            .where(col(Delivery.mailing_id).in_(active), col(Delivery.status) == status, condition)
            .limit(5_000)
        ).all()
        if not rows:
            continue
        hits = session.execute(
            update(Delivery)
            .where(col(Delivery.id).in_([r[0] for r in rows]), col(Delivery.status) == status, condition)
            .values(status="queued", lease_owner=None, lease_until=None, updated_at=moment)
            .returning(Delivery.id)
        ).all()
        candidates += rows
        ids += [h[0] for h in hits]
    if not ids:
        return 0
    taken = set(ids)
    by_mailing: dict[int, list[tuple[int, str, str]]] = {}
    for delivery_id, mailing_id, contact_id, email in candidates:
        if delivery_id in taken and email:
            by_mailing.setdefault(mailing_id, []).append((delivery_id, contact_id, email))  # type: ignore[arg-type]
    for mailing_id, rows in by_mailing.items():
        mailing = session.get(Mailing, mailing_id)
        if mailing is not None:
            publish_batches(session, mailing, rows, batching)
            session.add(mailing)
    return len(taken)


def complete_finished(session: Session) -> list[int]:
    """Sending mailings with everything frozen and no open delivery become ``completed``."""
    done = []
    for mailing in session.exec(
        select(Mailing).where(
            Mailing.status == "sending", col(Mailing.frozen), col(Mailing.requeue_cursor).is_(None)
        )
    ).all():
        still_open = session.exec(
            select(Delivery.id)
            .where(Delivery.mailing_id == mailing.id, col(Delivery.status).in_(OPEN))
            .limit(1)
        ).first()
        if still_open is None:
            hit = session.execute(
                update(Mailing)
                .where(col(Mailing.id) == mailing.id, col(Mailing.status) == "sending")
                .values(status="completed", finished_at=now(), updated_at=now())
            )
            if hit.rowcount:  # type: ignore[attr-defined]
                done.append(mailing.id)
    return [d for d in done if d is not None]


# -- senders ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    contact_id: str
    email: str
    attempts: int
    contact: dict[str, Any]
    suppressed: str | None


def mailing_status(session: Session, mailing_id: int) -> str | None:
    return session.exec(select(Mailing.status).where(Mailing.id == mailing_id)).first()


def claim(session: Session, mailing_id: int, ids: list[int], owner: str, lease_s: float) -> list[Claimed]:
    """Take queued deliveries of a sending mailing (others are someone else's or done)."""
    moment = now()
    status = mailing_status(session, mailing_id)
    if status != "sending":
        return []
    rows = session.execute(
        update(Delivery)
        .where(
            col(Delivery.id).in_(ids),
            col(Delivery.mailing_id) == mailing_id,
            col(Delivery.status) == "queued",
        )
        .values(status="sending", lease_owner=owner, lease_until=moment + timedelta(seconds=lease_s))
        .returning(Delivery.id, Delivery.contact_id, Delivery.email, Delivery.attempts)
    ).all()
    if not rows:
        return []
    # Columns, not entities: a batch's 200 contacts skip the ORM's identity map and instance state.
    columns = [getattr(Contact, name) for name in ("contact_id", "email", *CLAIM_FIELDS)]
    contacts = {
        c.contact_id: c
        for c in session.execute(
            select(*columns).where(col(Contact.contact_id).in_([r[1] for r in rows]))
        ).all()
    }
    suppressed = suppressed_addresses(session, [r[2] for r in rows if r[2]])
    claimed = []
    for delivery_id, contact_id, email, attempts in rows:
        contact = contacts.get(contact_id)
        data = {
            "first_name": contact.first_name if contact else None,
            "last_name": contact.last_name if contact else None,
            "email": email,
            "language": contact.language if contact else None,
            "custom": dict(contact.custom_fields or {}) if contact else {},
        }
        why = suppression_reason(contact, suppressed) if contact else "contact erased"
        claimed.append(Claimed(delivery_id, contact_id, email or "", attempts, data, why))
    return claimed


def mark_handed_over(session: Session, ids: list[int], lease_s: float) -> None:
    table = DELIVERIES
    session.execute(
        table.update()
        .where(table.c.id.in_(ids), table.c.status == "sending")
        .values(status="handed_over", lease_until=now() + timedelta(seconds=lease_s))
    )


def renew(session: Session, ids: list[int], owner: str, lease_s: float) -> None:
    until = now() + timedelta(seconds=lease_s)
    for start in range(0, len(ids), FREEZE_PAGE):
        session.execute(
            update(Delivery)
            .where(
                col(Delivery.id).in_(ids[start : start + FREEZE_PAGE]),
                col(Delivery.lease_owner) == owner,
                col(Delivery.status).in_(("sending", "handed_over")),
            )
            .values(lease_until=until)
        )


def write_results(session: Session, results: list[dict[str, Any]]) -> None:
    """Bulk update by primary key: [{"id", "status", "attempts", "last_reply", ...}]; one
    executemany per set of keys."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for values in results:
        shapes.setdefault(tuple(sorted(values)), []).append(values)
    table = DELIVERIES
    for keys, rows in shapes.items():
        columns = [key for key in keys if key != "id"]
        statement = (
            table.update()
            .where(table.c.id == bindparam("p_id"))
            .values({key: bindparam(f"p_{key}") for key in columns})
        )
        session.execute(statement, [{f"p_{key}": row[key] for key in keys} for row in rows])


def release(session: Session, ids: list[int], owner: str) -> None:
    """Give claimed rows back (the mailing was paused while they waited)."""
    session.execute(
        update(Delivery)
        .where(
            col(Delivery.id).in_(ids), col(Delivery.lease_owner) == owner, col(Delivery.status) == "sending"
        )
        .values(status="queued", lease_owner=None, lease_until=None)
    )
    cancelled = select(Mailing.id).where(Mailing.status == "cancelled")
    session.execute(  # released after the cancel marked the queued rows: they will not be sent either
        update(Delivery)
        .where(
            col(Delivery.id).in_(ids),
            col(Delivery.status) == "queued",
            col(Delivery.mailing_id).in_(cancelled),
        )
        .values(status="failed", last_reply="not sent: mailing cancelled", updated_at=now())
    )


def retry_at(attempt: int, base_s: float, max_s: float) -> datetime:
    delay = min(max_s, base_s * 2 ** (attempt - 1))
    return now() + timedelta(seconds=random.uniform(delay / 2, delay))  # noqa: S311


# -- progress ---------------------------------------------------------------------------------


def progress(session: Session, mailing_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.mailing_id == mailing_id)
        .group_by(Delivery.status)
    ).all()
    counts = {status: count for status, count in rows}
    counts["total"] = sum(counts.values())
    return counts


# -- recipient actions (unsubscribe, open, bounce) --------------------------------------------


def delivery_for(session: Session, mailing_id: int, contact_id: str) -> Delivery | None:
    return session.exec(
        select(Delivery).where(Delivery.mailing_id == mailing_id, Delivery.contact_id == contact_id)
    ).first()


def event_for(delivery: Delivery, status: DeliveryStatus, reason: str | None = None) -> DeliveryEvent:
    import uuid

    cid = correlation_id(delivery.mailing_id, delivery.id or 0)
    return DeliveryEvent(
        message_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{cid}|{status}"),
        correlation_id=cid,
        recipient=delivery.email or "erased@invalid.invalid",
        status=status,
        source="mass_mailer",
        reason=reason,
        message_id_header=delivery.message_id_header,
    )


def unsubscribe(session: Session, mailing_id: int, contact_id: str) -> bool:
    """Mark the contact unsubscribed (and suppressed); publish ``unsubscribed`` via the outbox."""
    from services.mass_mailer.audience.store import mark_contact

    contact = session.get(Contact, contact_id)
    if contact is None:
        return False
    already = contact.unsubscribed
    delivery = delivery_for(session, mailing_id, contact_id)
    mark_contact(
        session, contact_id, contact.email, "unsubscribed", f"one-click unsubscribe, mailing {mailing_id}"
    )
    if delivery is not None and not already:
        delivery.status = "unsubscribed"
        delivery.updated_at = now()
        session.add(delivery)
        if delivery.email:
            event = event_for(
                delivery, DeliveryStatus.UNSUBSCRIBED, f"unsubscribe link of mailing {mailing_id}"
            )
            enqueue(session, MAIL_DELIVERY_EVENTS, event, key=event.correlation_id)
    return True


def opened(session: Session, mailing_id: int, contact_id: str) -> bool:
    delivery = delivery_for(session, mailing_id, contact_id)
    if delivery is None or delivery.status not in ("sent", "handed_over"):
        return False
    delivery.status = "opened"
    delivery.opened_at = now()
    delivery.updated_at = now()
    session.add(delivery)
    return True


def apply_delivery_event(session: Session, event: DeliveryEvent) -> None:
    """Bounces and complaints (from the scanner or a feedback loop) update deliveries and contacts."""
    from services.mass_mailer.audience.store import mark_contact
    from services.mass_mailer.mailings.links import parse_correlation_id

    if event.status not in (DeliveryStatus.BOUNCED, DeliveryStatus.COMPLAINED):
        return
    ids = parse_correlation_id(event.correlation_id)
    delivery = session.get(Delivery, ids[1]) if ids else None
    if delivery is not None and delivery.mailing_id != ids[0]:  # type: ignore[index]
        delivery = None
    hard = event.status == DeliveryStatus.COMPLAINED or is_hard_bounce(event)
    if delivery is not None and (hard or delivery.status in ("sent", "handed_over", "deferred")):
        delivery.status = event.status.value
        delivery.last_reply = (event.reason or event.status.value)[:1_000]
        delivery.updated_at = now()
        session.add(delivery)
    if hard:
        flag = "complained" if event.status == DeliveryStatus.COMPLAINED else "bounced"
        mark_contact(
            session, delivery.contact_id if delivery else None, event.recipient, flag, event.reason or flag
        )


def is_hard_bounce(event: DeliveryEvent) -> bool:
    reason = (event.reason or "").lower()
    if reason.startswith("soft"):
        return False
    return (
        reason.startswith("hard")
        or (event.smtp_code is not None and event.smtp_code >= 500)
        or (event.enhanced_code or "").startswith("5")
    )
