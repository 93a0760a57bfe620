"""Queries for contacts (import, GDPR), target groups, members and update tasks."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from services.mass_mailer import suppression
from services.mass_mailer.audience.conditions import Condition, matches
from services.mass_mailer.audience.models import GroupUpdateTask, TargetGroup, TargetGroupMember
from services.mass_mailer.contacts import is_suppressed
from services.mass_mailer.mailings.models import Delivery
from services.mass_mailer.models import Contact, OutboundMessage, Suppression

PAGE = 1_000


def now() -> datetime:
    return datetime.now(UTC)


# -- contacts ---------------------------------------------------------------------------------


def import_contacts(session: Session, rows: list[dict[str, Any]]) -> tuple[int, int]:
    """Insert or update contacts from a parsed CSV; our own suppression flags are kept."""
    created = updated = 0
    ids = [r["contact_id"] for r in rows]
    existing: dict[str, Contact] = {}
    for start in range(0, len(ids), PAGE):
        chunk = ids[start : start + PAGE]
        for contact in session.exec(select(Contact).where(col(Contact.contact_id).in_(chunk))).all():
            existing[contact.contact_id] = contact
    moment = now()
    for row in rows:
        contact = existing.get(row["contact_id"])
        if contact is None:
            contact = Contact(contact_id=row["contact_id"], created_at=moment)
            created += 1
        else:
            updated += 1
        contact.email = row["email"]
        contact.first_name = row["first_name"]
        contact.last_name = row["last_name"]
        contact.language = row["language"]
        contact.custom_fields = {**(contact.custom_fields or {}), **row["custom_fields"]}
        contact.email_opt_out = row["email_opt_out"] or contact.email_opt_out
        contact.updated_at = moment
        session.add(contact)
    return created, updated


def export_contact(session: Session, contact_id: str) -> dict[str, Any] | None:
    """Everything stored about one contact (GDPR art. 15)."""
    contact = session.get(Contact, contact_id)
    if contact is None:
        return None
    memberships = session.exec(
        select(TargetGroupMember).where(TargetGroupMember.contact_id == contact_id)
    ).all()
    deliveries = session.exec(select(Delivery).where(Delivery.contact_id == contact_id)).all()
    suppression = session.get(Suppression, contact.email) if contact.email else None
    return {
        "contact": contact.model_dump(mode="json"),
        "target_groups": [m.model_dump(mode="json") for m in memberships],
        "deliveries": [d.model_dump(mode="json", exclude={"lease_owner", "lease_until"}) for d in deliveries],
        "suppression": suppression.model_dump(mode="json") if suppression else None,
    }


def erased_id(contact_id: str) -> str:
    return "erased-" + hashlib.sha256(contact_id.encode()).hexdigest()[:24]


def _erase_transactional(session: Session, email: str) -> None:
    """Finished transactional mails to the address keep only their status, not their content."""
    rows = session.exec(
        select(OutboundMessage).where(
            col(OutboundMessage.recipients).contains(email),
            col(OutboundMessage.status).in_(("sent", "failed")),
        )
    ).all()
    for row in rows:
        row.payload, row.recipients, row.subject = "{}", "erased", ""
        row.recipient_status, row.last_error = {}, None
        session.add(row)


def _keep_block_hashed(session: Session, contact: Contact) -> None:
    """The address's suppression (listed, or a flag on the contact) stays, keyed by a hash of
    the address only (services/mass_mailer/suppression.py)."""
    email = (contact.email or "").lower()
    listed = session.get(Suppression, email)
    reason = listed.reason if listed is not None else is_suppressed(contact)
    if listed is not None:
        session.delete(listed)
    key = suppression.hashed(email)
    if reason and session.get(Suppression, key) is None:
        detail = "contact erased (GDPR): the address is kept only as its SHA-256"
        session.add(Suppression(email=key, reason=reason[:20], detail=detail))


def erase_contact(session: Session, contact_id: str) -> bool:
    """Remove personal data; delivery records stay for statistics, anonymised."""
    contact = session.get(Contact, contact_id)
    found = contact is not None
    if contact is not None:
        if contact.email:
            _keep_block_hashed(session, contact)
            _erase_transactional(session, contact.email)
        session.delete(contact)
    session.execute(delete(TargetGroupMember).where(col(TargetGroupMember.contact_id) == contact_id))
    result = session.execute(
        update(Delivery)
        .where(col(Delivery.contact_id) == contact_id)
        .values(contact_id=erased_id(contact_id), email=None, message_id_header=None, last_reply=None)
    )
    return found or bool(result.rowcount)  # type: ignore[attr-defined]


def mark_contact(session: Session, contact_id: str | None, email: str | None, flag: str, reason: str) -> None:
    """Set a suppression flag (unsubscribed, bounced, complained) and list the address."""
    contact = session.get(Contact, contact_id) if contact_id else None
    if contact is None and email:
        contact = session.exec(select(Contact).where(Contact.email == email.lower())).first()
    if contact is not None:
        setattr(contact, flag, True)
        contact.updated_at = now()
        session.add(contact)
        email = email or contact.email
    if email and session.get(Suppression, email.lower()) is None:
        session.add(Suppression(email=email.lower(), reason=flag, detail=reason[:2_000]))
    if contact is not None and flag == "unsubscribed":
        session.execute(
            delete(TargetGroupMember).where(col(TargetGroupMember.contact_id) == contact.contact_id)
        )


# -- target groups ----------------------------------------------------------------------------


def add_members(session: Session, group_id: str, contact_ids: list[str], source: str = "static") -> list[str]:
    """Add contacts (only existing ones with an email that never unsubscribed); returns refusals."""
    refused: list[str] = []
    present = {
        m.contact_id
        for m in session.exec(
            select(TargetGroupMember).where(
                TargetGroupMember.target_group_id == group_id,
                col(TargetGroupMember.contact_id).in_(contact_ids),
            )
        ).all()
    }
    contacts = {
        c.contact_id: c
        for c in session.exec(select(Contact).where(col(Contact.contact_id).in_(contact_ids))).all()
    }
    for contact_id in dict.fromkeys(contact_ids):
        contact = contacts.get(contact_id)
        if contact is None or not contact.email or contact.unsubscribed:
            refused.append(contact_id)
            continue
        if contact_id not in present:
            session.add(TargetGroupMember(target_group_id=group_id, contact_id=contact_id, source=source))
    return refused


def remove_members(session: Session, group_id: str, contact_ids: list[str]) -> None:
    session.execute(
        delete(TargetGroupMember).where(
            col(TargetGroupMember.target_group_id) == group_id,
            col(TargetGroupMember.contact_id).in_(contact_ids),
        )
    )


def apply_membership(session: Session, group_id: str, contact_id: str, added: bool) -> None:
    """A CRM workflow message; a group we do not know yet is created inactive."""
    if session.get(TargetGroup, group_id) is None:
        session.add(TargetGroup(id=group_id, name=group_id, active=False))
        session.flush()
    if added:
        add_members(session, group_id, [contact_id])
    else:
        remove_members(session, group_id, [contact_id])


def member_count(session: Session, group_id: str) -> int:
    from sqlalchemy import func

    return session.execute(
        select(func.count())
        .select_from(TargetGroupMember)
        .where(TargetGroupMember.target_group_id == group_id)
    ).scalar_one()


def evaluate_conditions(session: Session, group_id: str) -> tuple[int, int]:
    """Re-evaluate a group's conditions over all contacts (keyset pages); returns (added, removed).

    Members that came from conditions and no longer match are removed; static members stay.
    """
    group = session.get(TargetGroup, group_id)
    if group is None:
        raise KeyError(group_id)
    conditions = [Condition.model_validate(c) for c in group.conditions]
    current = {
        m.contact_id: m.source
        for m in session.exec(
            select(TargetGroupMember).where(TargetGroupMember.target_group_id == group_id)
        ).all()
    }
    added = removed = 0
    cursor = ""
    while True:
        page = session.exec(
            select(Contact)
            .where(col(Contact.contact_id) > cursor)
            .order_by(col(Contact.contact_id))
            .limit(PAGE)
        ).all()
        if not page:
            break
        cursor = page[-1].contact_id
        for contact in page:
            data = contact.model_dump()
            eligible = bool(contact.email) and not contact.unsubscribed and matches(conditions, data)
            source = current.get(contact.contact_id)
            if eligible and source is None:
                session.add(
                    TargetGroupMember(
                        target_group_id=group_id, contact_id=contact.contact_id, source="condition"
                    )
                )
                added += 1
            elif not eligible and source == "condition":
                remove_members(session, group_id, [contact.contact_id])
                removed += 1
    return added, removed


def next_run(at_time: str, interval_days: int, after: datetime) -> datetime:
    hour, minute = (int(p) for p in at_time.split(":"))
    candidate = after.replace(hour=hour, minute=minute, second=0, microsecond=0)
    while candidate <= after:
        candidate += timedelta(days=1)
    return candidate if interval_days <= 1 else candidate + timedelta(days=interval_days - 1)


def claim_due_task(session: Session) -> GroupUpdateTask | None:
    """One due, active task, moved to its next run time with a conditional update (several
    instances: only the one whose update hits the row runs it)."""
    moment = now()
    task = session.exec(
        select(GroupUpdateTask)
        .where(col(GroupUpdateTask.active), col(GroupUpdateTask.next_run_at) <= moment)
        .order_by(col(GroupUpdateTask.next_run_at))
        .limit(1)
    ).first()
    if task is None:
        return None
    following = next_run(task.at_time, task.interval_days, moment)
    hit = session.execute(
        update(GroupUpdateTask)
        .where(col(GroupUpdateTask.id) == task.id, col(GroupUpdateTask.next_run_at) == task.next_run_at)
        .values(next_run_at=following, last_run_at=moment)
    )
    return task if hit.rowcount else None  # type: ignore[attr-defined]


def record_task_result(session: Session, task_id: int, result: str) -> None:
    task = session.get(GroupUpdateTask, task_id)
    if task is not None:
        task.last_result = result[:500]
        session.add(task)
