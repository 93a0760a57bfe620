"""Database access for the event triggers service: events, registrations, triggers, the durable
send timers (et_send), the template catalogue and GDPR deletions.

Every function runs inside the caller's transaction (``in_transaction``). Timestamps are stored
in UTC. "Now" for due times comes from the injected clock; leases use the real clock.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, bindparam, insert, or_, update
from sqlmodel import Session, col, select

from services.event_triggers import rules
from services.event_triggers.models import (
    DeliveryRecord,
    MassEvent,
    Registration,
    ScheduledSend,
    ServiceSecret,
    TemplateEntry,
    Trigger,
)
from services.event_triggers.schedule import SCHEDULED_ACTIONS, due_at, gdpr_deletion_at
from services.event_triggers.specs import TriggerSpec
from shared.contracts import DeliveryEvent, MassEventChanged, RegistrationChanged, TemplateChanged
from shared.contracts.events import FormAnswersDeleted
from shared.outbox import enqueue
from shared.timeutil import as_utc
from shared.topics import EVENTS_GDPR_DELETIONS

GDPR_NAMESPACE = uuid.UUID("0c8a7a5e-5b1e-4c1f-9a43-2f6d0e9b7c21")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Problem(ValueError):
    """A request that cannot be applied (HTTP 422 / 404 / 409)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


# -- events -----------------------------------------------------------------------------------


def save_mass_event(session: Session, message: MassEventChanged) -> bool:
    """Apply an event announcement; older announcements than the stored one are ignored.

    A new start/end reschedules pending sends; a cancellation cancels them.
    """
    event = session.get(MassEvent, message.event_id)
    if event is not None and as_utc(message.occurred_at) < as_utc(event.updated_at):
        return False
    new = event is None
    event = event or MassEvent(
        event_id=message.event_id,
        event_number=message.event_number,
        name=message.name,
        start=message.start,
        end=message.end,
    )
    before = _calendar_view(event)
    was_cancelled = event.cancelled
    for field in (
        "event_number",
        "name",
        "time_zone",
        "location",
        "registration_start",
        "registration_end",
        "sub_events",
    ):
        setattr(event, field, getattr(message, field))
    event.start = as_utc(message.start)
    event.end = as_utc(message.end)
    event.cancelled = message.kind == "mass_event.cancelled"
    event.updated_at = as_utc(message.occurred_at)
    after = _calendar_view(event)
    if not new and (after != before or event.cancelled != was_cancelled):
        event.sequence += 1
    session.add(event)
    session.flush()
    session.info.pop(_EVENT_TIMES, None)
    if event.cancelled and not was_cancelled:
        _cancel_pending(session, ScheduledSend.event_id == event.event_id, "event cancelled")
    elif not new and after[1:4] != before[1:4]:
        for trigger in _triggers(session, event.event_id, actions=SCHEDULED_ACTIONS):
            session.execute(
                update(ScheduledSend)
                .where(
                    and_(col(ScheduledSend.trigger_id) == trigger.id, col(ScheduledSend.status) == "pending")
                )
                .values(due_at=_due(trigger, event), updated_at=utcnow())
            )
    return True


def _calendar_view(event: MassEvent) -> tuple[Any, ...]:
    """What a calendar entry shows (name, start, end, zone, location): a change raises SEQUENCE."""
    return (event.name, as_utc(event.start), as_utc(event.end), event.time_zone, event.location)


def get_event(session: Session, event_id: str) -> MassEvent | None:
    return session.get(MassEvent, event_id)


@dataclass(frozen=True, slots=True)
class EventTimes:
    """The columns of a mass event that planning a registration's sends reads."""

    event_id: str
    cancelled: bool
    start: datetime
    end: datetime
    time_zone: str


def _due(trigger: Trigger | TriggerView, event: MassEvent | EventTimes) -> datetime:
    return due_at(
        trigger.action,
        trigger.offset_value,
        trigger.offset_unit,
        trigger.local_time,
        event.start,
        event.end,
        event.time_zone,
    )


def _triggers(session: Session, event_id: str, *, actions: tuple[str, ...] | None = None) -> list[Trigger]:
    query = select(Trigger).where(Trigger.event_id == event_id, col(Trigger.active))
    if actions is not None:
        query = query.where(col(Trigger.action).in_(actions))
    return list(session.exec(query).all())


@dataclass(frozen=True, slots=True)
class TriggerView:
    """The columns of an active trigger that planning a registration's sends reads."""

    id: int
    action: str
    recipients: str
    sub_event: str | None
    functions: list[str]
    offset_value: int
    offset_unit: str
    local_time: str | None


def _active_triggers(session: Session, event_id: str, actions: tuple[str, ...]) -> list[TriggerView]:
    """An event's active triggers for ``actions``, read once per transaction: a group commit
    applies many registrations of the same event in one session."""
    cache: dict[str, list[TriggerView]] = session.info.setdefault("event_triggers", {})
    if event_id not in cache:
        rows = session.connection().execute(_READ_ACTIVE_TRIGGERS, {"b_event": event_id})
        cache[event_id] = [TriggerView(*row) for row in rows]
    return [t for t in cache[event_id] if t.action in actions]


def _cancel_pending(session: Session, condition: Any, reason: str) -> None:
    session.execute(
        update(ScheduledSend)
        .where(and_(condition, col(ScheduledSend.status) == "pending"))
        .values(status="cancelled", reason=reason, updated_at=utcnow())
    )


# -- registrations ----------------------------------------------------------------------------


def _filter(trigger: Trigger | TriggerView) -> rules.TriggerFilter:
    return rules.TriggerFilter(trigger.recipients, trigger.sub_event, tuple(trigger.functions))


def _registrant(registration: Registration) -> rules.Registrant:
    return rules.Registrant(registration.role, registration.sub_event, registration.function)


REGISTRATIONS: Table = Registration.__table__  # type: ignore[attr-defined]
SENDS: Table = ScheduledSend.__table__  # type: ignore[attr-defined]
DELIVERIES: Table = DeliveryRecord.__table__  # type: ignore[attr-defined]
# The per-message statements are Core and built once: registrations and delivery events arrive
# by the thousand, and ORM entities plus per-call statement construction cost more than SQLite.
_READ_REGISTRATION = select(
    REGISTRATIONS.c.status, REGISTRATIONS.c.updated_at, REGISTRATIONS.c.answers_deleted_at
).where(REGISTRATIONS.c.registration_id == bindparam("b_id"))
_INSERT_REGISTRATION = insert(REGISTRATIONS)
_UPDATE_REGISTRATION = update(REGISTRATIONS).where(REGISTRATIONS.c.registration_id == bindparam("b_id"))
_SEND_EXISTS = select(SENDS.c.id).where(
    SENDS.c.trigger_id == bindparam("b_trigger"), SENDS.c.registration_id == bindparam("b_registration")
)
_INSERT_SEND = insert(SENDS)
_DELIVERY_SEEN = select(DELIVERIES.c.id).where(DELIVERIES.c.message_id == bindparam("b_message_id"))
_INSERT_DELIVERY = insert(DELIVERIES)
_T = Trigger.__table__.c  # type: ignore[attr-defined]
_READ_ACTIVE_TRIGGERS = select(
    _T.id,
    _T.action,
    _T.recipients,
    _T.sub_event,
    _T.functions,
    _T.offset_value,
    _T.offset_unit,
    _T.local_time,
).where(_T.event_id == bindparam("b_event"), _T.active)
_E = MassEvent.__table__.c  # type: ignore[attr-defined]
_READ_EVENT_TIMES = select(_E.event_id, _E.cancelled, _E.start, _E.end, _E.time_zone).where(
    _E.event_id == bindparam("b_id")
)
_EVENT_TIMES = "event_triggers.event_times"


def _event_times(session: Session, event_id: str) -> EventTimes | None:
    """An event's times, read once per transaction (a group commit applies many registrations
    of the same event in one session; ``save_mass_event`` forgets them)."""
    cache: dict[str, EventTimes | None] = session.info.setdefault(_EVENT_TIMES, {})
    if event_id not in cache:
        found = session.connection().execute(_READ_EVENT_TIMES, {"b_id": event_id}).first()
        cache[event_id] = EventTimes(*found) if found is not None else None
    return cache[event_id]


def apply_registration(session: Session, message: RegistrationChanged, now: datetime) -> bool:
    """Store a registration change and plan its sends. Returns True if a send became due now.

    Redelivered or stale messages (older than the stored state) change nothing; repeats of the
    current state plan nothing new, and the (trigger, registration) unique key stops doubles.
    """
    db = session.connection()
    found = db.execute(_READ_REGISTRATION, {"b_id": message.registration_id}).first()
    first_sight = found is None  # then no send can exist for it yet
    occurred = as_utc(message.occurred_at)
    if found is not None and occurred < as_utc(found.updated_at):
        return False
    old_status = found.status if found is not None else None
    new_status = rules.STATUS_BY_KIND[message.kind]
    values: dict[str, Any] = {
        "event_id": message.event_id,
        "contact_id": message.contact_id,
        "role": message.role,
        "function": message.function,
        "sub_event": message.sub_event,
        "status": new_status,
        "updated_at": occurred,
    }
    if message.contact is not None:
        values["contact"] = message.contact.model_dump(exclude_none=True)
        values["email"] = message.contact.email
    if message.form_answers:
        values["answered"] = True
        if found is None or found.answers_deleted_at is None:
            values["answers"] = message.form_answers
    if found is None:
        defaults = {
            "email": None,
            "contact": {},
            "answers": {},
            "answered": False,
            "answers_deleted_at": None,
        }
        row = {"registration_id": message.registration_id, **defaults, **values, "created_at": utcnow()}
        db.execute(_INSERT_REGISTRATION, row)
    else:
        db.execute(_UPDATE_REGISTRATION, {"b_id": message.registration_id, **values})
        loaded = session.identity_map.get(session.identity_key(Registration, message.registration_id))
        if loaded is not None:  # an ORM copy read earlier in this transaction is now stale
            session.expire(loaded)

    event = _event_times(session, message.event_id)
    if event is None:
        return False  # no event, so no triggers yet
    registrant = rules.Registrant(message.role, message.sub_event, message.function)
    registration_id, event_id = message.registration_id, message.event_id
    due_now = False
    action = rules.transition_action(old_status, new_status)
    if action is not None and not event.cancelled:
        for trigger in _active_triggers(session, event.event_id, (action,)):
            if rules.matches(_filter(trigger), registrant):
                due_now |= _add_send(session, trigger, registration_id, event_id, now, known_new=first_sight)
    scheduled = _active_triggers(session, event.event_id, SCHEDULED_ACTIONS)
    if new_status in rules.ACTIVE_STATUSES and not event.cancelled:
        existing = (
            {}
            if first_sight or not scheduled
            else {
                s.trigger_id: s
                for s in session.exec(
                    select(ScheduledSend).where(ScheduledSend.registration_id == registration_id)
                ).all()
            }
        )
        for trigger in scheduled:
            if rules.matches(_filter(trigger), registrant):
                due = _due(trigger, event)
                _plan(session, trigger, registration_id, event_id, due, existing.get(trigger.id or 0), now)
                due_now |= due <= now
    elif scheduled:
        _cancel_pending(
            session,
            and_(
                col(ScheduledSend.registration_id) == registration_id,
                col(ScheduledSend.trigger_id).in_([t.id for t in scheduled]),
            ),
            f"registration {new_status}",
        )
    return due_now


def _add_send(
    session: Session,
    trigger: Trigger | TriggerView,
    registration_id: str,
    event_id: str,
    due: datetime,
    *,
    known_new: bool = False,
) -> bool:
    db = session.connection()
    if not known_new:
        exists = db.execute(_SEND_EXISTS, {"b_trigger": trigger.id, "b_registration": registration_id})
        if exists.first() is not None:
            return False
    moment = utcnow()
    row = {
        "trigger_id": trigger.id or 0,
        "registration_id": registration_id,
        "event_id": event_id,
        "due_at": due.astimezone(UTC),
        "status": "pending",
        "reason": None,
        "correlation_id": rules.correlation_id(trigger.id or 0, registration_id),
        "lease_owner": None,
        "lease_until": None,
        "sent_at": None,
        "created_at": moment,
        "updated_at": moment,
    }
    db.execute(_INSERT_SEND, row)
    return True


def _plan(
    session: Session,
    trigger: Trigger | TriggerView,
    registration_id: str,
    event_id: str,
    due: datetime,
    row: ScheduledSend | None,
    now: datetime,
) -> None:
    """Create or move a scheduled send; revive a cancelled one only if it is still ahead."""
    if row is None:
        _add_send(session, trigger, registration_id, event_id, due, known_new=True)
    elif row.status == "pending":
        row.due_at, row.updated_at = due.astimezone(UTC), utcnow()
        session.add(row)
    elif row.status == "cancelled" and due > now:
        row.status, row.reason, row.due_at, row.updated_at = "pending", None, due.astimezone(UTC), utcnow()
        session.add(row)


def get_registration(session: Session, registration_id: str) -> Registration | None:
    return session.get(Registration, registration_id)


# -- template catalogue ------------------------------------------------------------------------


def save_template(session: Session, message: TemplateChanged) -> bool:
    row = session.get(TemplateEntry, message.template_id)
    if row is not None and as_utc(message.occurred_at) < as_utc(row.updated_at):
        return False
    row = row or TemplateEntry(
        template_id=message.template_id, name=message.name, updated_at=message.occurred_at
    )
    row.name = message.name
    row.active = message.active
    row.deleted = message.kind == "template.deleted"
    row.subject = message.subject
    row.updated_at = as_utc(message.occurred_at)
    session.add(row)
    return True


def _template_usable(row: TemplateEntry | None) -> bool:
    return row is not None and row.active and not row.deleted


# -- triggers -----------------------------------------------------------------------------------


def save_trigger(
    session: Session, event_id: str, spec: TriggerSpec, now: datetime, trigger_id: int | None = None
) -> Trigger:
    """Create (or replace) a trigger after validating its template against the catalogue, then
    plan its sends for the registrations already there."""
    event = session.get(MassEvent, event_id)
    if event is None:
        raise Problem(404, f"no mass event {event_id!r}")
    if not _template_usable(session.get(TemplateEntry, spec.template_id)):
        raise Problem(422, f"template {spec.template_id} does not exist or is not active")
    if spec.sub_event is not None and event.sub_events and spec.sub_event not in event.sub_events:
        raise Problem(422, f"event {event_id!r} has no sub-event {spec.sub_event!r}")
    if trigger_id is None:
        trigger = Trigger(event_id=event_id, **spec.model_dump())
    else:
        found = session.get(Trigger, trigger_id)
        if found is None:
            raise Problem(404, f"no trigger {trigger_id}")
        trigger = found
        for field, value in spec.model_dump().items():
            setattr(trigger, field, value)
        trigger.updated_at = utcnow()
    session.add(trigger)
    session.flush()
    plan_trigger(session, trigger, event, now)
    return trigger


def plan_trigger(session: Session, trigger: Trigger, event: MassEvent, now: datetime) -> None:
    if not trigger.active:
        _cancel_pending(session, ScheduledSend.trigger_id == trigger.id, "trigger deactivated")
        return
    rows = {
        s.registration_id: s
        for s in session.exec(select(ScheduledSend).where(ScheduledSend.trigger_id == trigger.id)).all()
    }
    registrations = session.exec(select(Registration).where(Registration.event_id == event.event_id)).all()
    scheduled = trigger.action in SCHEDULED_ACTIONS
    due = _due(trigger, event) if scheduled else None
    for registration in registrations:
        row = rows.get(registration.registration_id)
        fits = rules.matches(_filter(trigger), _registrant(registration))
        if not fits or registration.status not in rules.ACTIVE_STATUSES or event.cancelled:
            if row is not None and row.status == "pending":
                row.status, row.reason = "cancelled", "registrant no longer matches the trigger"
                session.add(row)
            continue
        if due is not None:
            _plan(session, trigger, registration.registration_id, event.event_id, due, row, now)


def get_trigger(session: Session, trigger_id: int) -> Trigger | None:
    return session.get(Trigger, trigger_id)


def list_triggers(session: Session, event_id: str) -> list[Trigger]:
    return list(
        session.exec(select(Trigger).where(Trigger.event_id == event_id).order_by(col(Trigger.id))).all()
    )


def sends_of(session: Session, trigger_id: int, limit: int, offset: int) -> list[ScheduledSend]:
    query = (
        select(ScheduledSend)
        .where(ScheduledSend.trigger_id == trigger_id)
        .order_by(col(ScheduledSend.id))
        .offset(offset)
        .limit(limit)
    )
    return list(session.exec(query).all())


def trigger_stats(session: Session, trigger_id: int) -> dict[str, dict[str, int]]:
    """How many sends are in each state, and the latest delivery status per mail."""
    sends: dict[str, int] = {}
    statuses = session.exec(select(ScheduledSend.status).where(ScheduledSend.trigger_id == trigger_id)).all()
    for status in statuses:
        sends[status] = sends.get(status, 0) + 1
    latest: dict[tuple[str, str], DeliveryRecord] = {}
    for record in deliveries_for(session, rules.trigger_prefix(trigger_id)):
        latest[(record.correlation_id, record.recipient)] = record
    deliveries: dict[str, int] = {}
    for record in latest.values():
        deliveries[record.status] = deliveries.get(record.status, 0) + 1
    return {"sends": sends, "deliveries": deliveries}


# -- dispatching due sends ----------------------------------------------------------------------


@dataclass(frozen=True)
class SendJob:
    """Everything needed to build one mail, read in the claiming transaction."""

    send_id: int
    correlation_id: str
    action: str
    trigger_id: int
    template_id: int
    sender_identity: str | None
    certificate_template: str | None
    registration: dict[str, Any]
    event: dict[str, Any]


_S = SENDS.c
_R = REGISTRATIONS.c
_CLAIMED = select(_S.id, _S.trigger_id, _S.registration_id, _S.event_id, _S.correlation_id).where(
    _S.lease_owner == bindparam("b_token"), _S.status == "pending"
)
_CLAIMED_REGISTRATIONS = select(*REGISTRATIONS.c).where(
    _R.registration_id.in_(bindparam("b_ids", expanding=True))
)
_MARK_SENT = (
    update(SENDS)
    .where(_S.id.in_(bindparam("b_ids", expanding=True)), _S.lease_owner == bindparam("b_token"))
    .values(status="sent", sent_at=bindparam("b_moment"), updated_at=bindparam("b_moment"))
    .values(lease_owner=None, lease_until=None)
)
_SKIP = (
    update(SENDS)
    .where(_S.id == bindparam("b_id"))
    .values(
        status="skipped",
        reason=bindparam("b_reason"),
        updated_at=bindparam("b_moment"),
        lease_owner=None,
        lease_until=None,
    )
)


def claim_due(session: Session, token: str, now: datetime, limit: int, lease_s: float) -> list[SendJob]:
    """Lease up to ``limit`` due sends (one conditional UPDATE: safe with several instances),
    settle the ones that must not go out any more, and return the rest as jobs."""
    moment = utcnow()
    free = or_(col(ScheduledSend.lease_until).is_(None), col(ScheduledSend.lease_until) < moment)
    candidates = (
        select(ScheduledSend.id)
        .where(col(ScheduledSend.status) == "pending", col(ScheduledSend.due_at) <= now.astimezone(UTC), free)
        .order_by(col(ScheduledSend.due_at))
        .limit(limit)
    )
    ids = [i for i in session.exec(candidates).all() if i is not None]
    if not ids:
        return []
    session.execute(
        update(ScheduledSend)
        .where(and_(col(ScheduledSend.id).in_(ids), col(ScheduledSend.status) == "pending", free))
        .values(lease_owner=token, lease_until=moment + timedelta(seconds=lease_s))
    )
    db = session.connection()
    rows = db.execute(_CLAIMED, {"b_token": token}).all()
    if not rows:
        return []
    triggers = {
        t.id: t
        for t in session.exec(select(Trigger).where(col(Trigger.id).in_({r.trigger_id for r in rows}))).all()
    }
    registrations = {
        r.registration_id: r._asdict()
        for r in db.execute(_CLAIMED_REGISTRATIONS, {"b_ids": list({r.registration_id for r in rows})})
    }
    events = {
        e.event_id: e
        for e in session.exec(
            select(MassEvent).where(col(MassEvent.event_id).in_({r.event_id for r in rows}))
        ).all()
    }
    templates = {
        t.template_id: t
        for t in session.exec(
            select(TemplateEntry).where(
                col(TemplateEntry.template_id).in_({t.template_id for t in triggers.values()})
            )
        ).all()
    }
    event_views = {event_id: event.model_dump() for event_id, event in events.items()}
    jobs: list[SendJob] = []
    skipped: list[dict[str, Any]] = []
    for row in rows:
        trigger, registration = triggers.get(row.trigger_id), registrations.get(row.registration_id)
        event = events.get(row.event_id)
        if trigger is None or registration is None or event is None:
            reason: str | None = "trigger, registration or event gone"
        else:
            registrant = rules.Registrant(
                registration["role"], registration["sub_event"], registration["function"]
            )
            reason = rules.skip_reason(
                trigger.action,
                trigger_active=trigger.active,
                trigger_matches=rules.matches(_filter(trigger), registrant),
                registration_status=registration["status"],
                has_email=bool(registration["email"]),
                event_cancelled=event.cancelled,
                event_started=as_utc(event.start) <= now,
                template_usable=_template_usable(templates.get(trigger.template_id)),
            )
        if reason is not None:
            skipped.append({"b_id": row.id, "b_reason": reason, "b_moment": moment})
            continue
        assert trigger is not None and registration is not None and event is not None
        jobs.append(
            SendJob(
                send_id=row.id or 0,
                correlation_id=row.correlation_id,
                action=trigger.action,
                trigger_id=trigger.id or 0,
                template_id=trigger.template_id,
                sender_identity=trigger.sender_identity,
                certificate_template=trigger.certificate_template,
                registration=registration,
                event=event_views[event.event_id],
            )
        )
    if skipped:
        db.execute(_SKIP, skipped)
    return jobs


def mark_sent(session: Session, ids: list[int], token: str) -> None:
    """The mails are with Kafka: record them as sent (handed to the outbound gateway)."""
    moment = utcnow()
    session.connection().execute(_MARK_SENT, {"b_ids": ids, "b_token": token, "b_moment": moment})


def mark_failed(session: Session, send_id: int, token: str, reason: str) -> None:
    """A send that can never be built (e.g. a broken certificate template): settle it."""
    session.execute(
        update(ScheduledSend)
        .where(and_(col(ScheduledSend.id) == send_id, col(ScheduledSend.lease_owner) == token))
        .values(
            status="skipped", reason=reason[:500], updated_at=utcnow(), lease_owner=None, lease_until=None
        )
    )


def release(session: Session, ids: list[int], token: str) -> None:
    """Publishing failed: give the sends back at once (they stay pending)."""
    session.execute(
        update(ScheduledSend)
        .where(and_(col(ScheduledSend.id).in_(ids), col(ScheduledSend.lease_owner) == token))
        .values(lease_owner=None, lease_until=None)
    )


# -- GDPR ---------------------------------------------------------------------------------------


def set_gdpr(session: Session, event_id: str, days: int) -> MassEvent:
    event = session.get(MassEvent, event_id)
    if event is None:
        raise Problem(404, f"no mass event {event_id!r}")
    if event.gdpr_done_at is not None:
        raise Problem(409, "the form answers of this event were already deleted")
    event.gdpr_delete_after_days, event.gdpr_cancelled = days, False
    session.add(event)
    return event


def cancel_gdpr(session: Session, event_id: str) -> MassEvent:
    event = session.get(MassEvent, event_id)
    if event is None:
        raise Problem(404, f"no mass event {event_id!r}")
    if event.gdpr_done_at is not None:
        raise Problem(409, "too late: the form answers of this event were already deleted")
    if event.gdpr_delete_after_days is None:
        raise Problem(409, "no automatic deletion is scheduled for this event")
    event.gdpr_cancelled = True
    session.add(event)
    return event


def gdpr_due_events(session: Session, now: datetime) -> list[str]:
    query = select(MassEvent).where(
        col(MassEvent.gdpr_delete_after_days).is_not(None),
        col(MassEvent.gdpr_done_at).is_(None),
        col(MassEvent.gdpr_cancelled).is_(False),
    )
    due = []
    for event in session.exec(query).all():
        moment = gdpr_deletion_at(event.end, event.gdpr_delete_after_days, event.gdpr_cancelled)
        if moment is not None and moment <= now:
            due.append(event.event_id)
    return due


def run_gdpr(session: Session, event_id: str, now: datetime) -> int:
    """Delete the form answers of every registration of a due event, once (conditional UPDATE
    claims the event, so two instances never both run it). Returns how many were deleted."""
    claimed = session.execute(
        update(MassEvent)
        .where(
            and_(
                col(MassEvent.event_id) == event_id,
                col(MassEvent.gdpr_done_at).is_(None),
                col(MassEvent.gdpr_cancelled).is_(False),
                col(MassEvent.gdpr_delete_after_days).is_not(None),
            )
        )
        .values(gdpr_done_at=now.astimezone(UTC))
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return 0
    count = 0
    for registration in session.exec(select(Registration).where(Registration.event_id == event_id)).all():
        if _delete_answers(session, registration, "automatic", now):
            count += 1
    return count


def delete_answers(session: Session, registration_id: str, now: datetime) -> Registration:
    registration = session.get(Registration, registration_id)
    if registration is None:
        raise Problem(404, f"no registration {registration_id!r}")
    _delete_answers(session, registration, "manual", now)
    return registration


def _delete_answers(session: Session, registration: Registration, reason: str, now: datetime) -> bool:
    if registration.answers_deleted_at is not None or not (registration.answered or registration.answers):
        return False  # already deleted, or nothing was ever answered
    registration.answers = {}
    registration.answers_deleted_at = now.astimezone(UTC)
    session.add(registration)
    message = FormAnswersDeleted(
        message_id=uuid.uuid5(GDPR_NAMESPACE, registration.registration_id),
        registration_id=registration.registration_id,
        event_id=registration.event_id,
        contact_id=registration.contact_id,
        reason=reason,  # type: ignore[arg-type]
        deleted_at=now,
    )
    enqueue(session, EVENTS_GDPR_DELETIONS, message, key=registration.registration_id)
    return True


# -- delivery results, secrets ------------------------------------------------------------------


def save_delivery_event(session: Session, message: DeliveryEvent) -> bool:
    """Store a delivery status once (redelivered events are recognised by their message id)."""
    key = str(message.message_id)
    db = session.connection()
    if db.execute(_DELIVERY_SEEN, {"b_message_id": key}).first() is not None:
        return False
    row = {
        "message_id": key,
        "correlation_id": message.correlation_id,
        "recipient": str(message.recipient),
        "status": message.status.value,
        "reason": message.reason,
        "smtp_code": message.smtp_code,
        "occurred_at": message.occurred_at,
    }
    db.execute(_INSERT_DELIVERY, row)
    return True


def deliveries_for(session: Session, correlation_prefix: str) -> list[DeliveryRecord]:
    query = select(DeliveryRecord).where(col(DeliveryRecord.correlation_id).startswith(correlation_prefix))
    return list(session.exec(query.order_by(col(DeliveryRecord.occurred_at))).all())


def link_secret(session: Session) -> str:
    """The generated calendar-link key (created once, shared by every instance)."""
    row = session.get(ServiceSecret, "calendar_link")
    if row is None:
        row = ServiceSecret(name="calendar_link", value=secrets.token_urlsafe(32))
        session.add(row)
        session.flush()
    return row.value
