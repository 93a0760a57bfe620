"""The durable timers on SQLite and PostgreSQL: planning, rescheduling, leases that several
instances can share, the (trigger, registration) uniqueness, GDPR claims."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from services.event_triggers import storage
from services.event_triggers.models import ScheduledSend
from services.event_triggers.specs import TriggerSpec
from shared.contracts import MassEventChanged, RegistrationChanged, TemplateChanged
from shared.db import migrate, session_scope
from shared.outbox import OutboxEvent
from shared.timeutil import as_utc
from tests.event_triggers.helpers import T0, event_message, registration_message, template_message

START = T0 + timedelta(days=10)


@pytest.fixture
def db(db_url):
    migrate("event_triggers", db_url)
    with session_scope(db_url) as session:
        storage.save_template(session, TemplateChanged.model_validate(template_message(7)))
        storage.save_mass_event(session, MassEventChanged.model_validate(event_message("E1", start=START)))
    return db_url


def register(db_url: str, count: int, **fields) -> None:
    with session_scope(db_url) as session:
        for i in range(count):
            message = registration_message(f"R{i}", occurred_at=T0, **fields)
            storage.apply_registration(session, RegistrationChanged.model_validate(message), T0)


def reminder(db_url: str, **fields) -> int:
    spec = TriggerSpec(name="reminder", template_id=7, action="before_start", offset_value=2, **fields)
    with session_scope(db_url) as session:
        return storage.save_trigger(session, "E1", spec, T0).id


def sends(db_url: str) -> list[ScheduledSend]:
    with session_scope(db_url) as session:
        return list(session.exec(select(ScheduledSend).order_by(ScheduledSend.id)).all())


def test_concurrent_claimers_never_share_a_send(db):
    reminder(db)
    register(db, 120)
    due = START  # everything is due
    claimed: list[list[int]] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        while True:
            with session_scope(db) as session:
                jobs = storage.claim_due(session, f"owner-{n}-{len(claimed)}", due - timedelta(days=1), 7, 60)
            if not jobs:
                return
            with lock:
                claimed.append([j.send_id for j in jobs])

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = [i for batch in claimed for i in batch]
    assert len(flat) == len(set(flat)) == 120


def test_expired_leases_are_taken_over_and_sent_rows_never_come_back(db):
    reminder(db)
    register(db, 3)
    now = START - timedelta(days=1)
    with session_scope(db) as session:
        first = storage.claim_due(session, "dead", now, 10, lease_s=-1)  # an instance that died
    with session_scope(db) as session:
        second = storage.claim_due(session, "alive", now, 10, lease_s=60)
        assert storage.claim_due(session, "third", now, 10, lease_s=60) == []
        storage.mark_sent(session, [j.send_id for j in second], "alive")
    assert [j.send_id for j in first] == [j.send_id for j in second]
    with session_scope(db) as session:
        assert storage.claim_due(session, "later", now + timedelta(days=30), 10, 60) == []
    assert {s.status for s in sends(db)} == {"sent"}


def test_plans_once_per_trigger_and_registration_and_follows_the_event(db):
    trigger_id = reminder(db)
    register(db, 2)
    register(db, 2)  # redelivery
    rows = sends(db)
    assert len(rows) == 2 and {as_utc(r.due_at) for r in rows} == {START - timedelta(days=2)}
    with session_scope(db) as session:
        moved = event_message("E1", kind="mass_event.updated", start=START + timedelta(days=1))
        storage.save_mass_event(session, MassEventChanged.model_validate(moved))
        assert session.get(storage.MassEvent, "E1").sequence == 1
    assert {as_utc(r.due_at) for r in sends(db)} == {START - timedelta(days=1)}
    with pytest.raises(IntegrityError), session_scope(db) as session:
        session.add(ScheduledSend(trigger_id=trigger_id, registration_id="R0", event_id="E1",
                                  due_at=T0, correlation_id="dup"))  # fmt: skip
        session.flush()


def test_deactivating_the_trigger_or_cancelling_the_event_cancels_pending_sends(db):
    trigger_id = reminder(db)
    register(db, 2)
    spec = TriggerSpec(name="reminder", template_id=7, action="before_start", offset_value=2, active=False)
    with session_scope(db) as session:
        storage.save_trigger(session, "E1", spec, T0, trigger_id)
    assert {(s.status, s.reason) for s in sends(db)} == {("cancelled", "trigger deactivated")}
    with session_scope(db) as session:
        storage.save_trigger(session, "E1", spec.model_copy(update={"active": True}), T0, trigger_id)
    assert {s.status for s in sends(db)} == {"pending"}  # revived: still ahead
    with session_scope(db) as session:
        cancelled = event_message("E1", kind="mass_event.cancelled", start=START)
        storage.save_mass_event(session, MassEventChanged.model_validate(cancelled))
    assert {(s.status, s.reason) for s in sends(db)} == {("cancelled", "event cancelled")}


def test_gdpr_runs_once_and_publishes_one_event_per_answered_registration(db):
    register(db, 2, form_answers={"q": "a"})
    register_more = registration_message("X", occurred_at=T0)
    with session_scope(db) as session:
        storage.apply_registration(session, RegistrationChanged.model_validate(register_more), T0)
        storage.set_gdpr(session, "E1", 1)
    deletion = START + timedelta(hours=8, days=1)
    with session_scope(db) as session:
        assert storage.gdpr_due_events(session, deletion - timedelta(seconds=1)) == []
        assert storage.gdpr_due_events(session, deletion) == ["E1"]
        assert storage.run_gdpr(session, "E1", deletion) == 2
        assert storage.run_gdpr(session, "E1", deletion) == 0
        events = session.exec(select(OutboxEvent)).all()
        registration = storage.get_registration(session, "R0")
        assert registration.answers == {} and registration.answered
    assert sorted(e.key for e in events) == ["R0", "R1"]
    assert {e.topic for e in events} == {"events.gdpr-deletions"}


def test_stale_registration_messages_are_ignored(db):
    with session_scope(db) as session:
        newer = registration_message(
            "R1", kind="registration.cancelled", occurred_at=T0 + timedelta(seconds=5)
        )
        older = registration_message("R1", occurred_at=T0)
        storage.apply_registration(session, RegistrationChanged.model_validate(newer), T0)
        storage.apply_registration(session, RegistrationChanged.model_validate(older), T0)
        assert storage.get_registration(session, "R1").status == "cancelled"


def test_a_registration_read_earlier_in_the_transaction_does_not_go_stale(db):
    with session_scope(db) as session:
        created = registration_message("R1", occurred_at=T0, form_answers={"q": "a"})
        storage.apply_registration(session, RegistrationChanged.model_validate(created), T0)
        seen = storage.get_registration(session, "R1")  # now in the session's identity map
        assert seen.status == "registered"
        cancelled = registration_message("R1", kind="registration.cancelled", occurred_at=T0 + timedelta(1))
        storage.apply_registration(session, RegistrationChanged.model_validate(cancelled), T0)
        registration = storage.get_registration(session, "R1")
        assert registration is seen
        assert (registration.status, registration.answers, registration.answered) == (
            "cancelled",
            {"q": "a"},
            True,
        )
        assert registration.email == "r1@example.org" and registration.contact["first_name"] == "FirstR1"


def test_claimed_jobs_carry_their_data_and_sends_that_must_not_go_out_are_skipped(db):
    reminder(db)
    register(db, 3)
    with session_scope(db) as session:  # behind the planner's back: R0 loses its address
        session.execute(
            update(storage.Registration)
            .where(storage.Registration.registration_id == "R0")
            .values(email=None)
        )
    with session_scope(db) as session:
        jobs = storage.claim_due(session, "owner", START - timedelta(days=1), 10, 60)
    assert sorted(j.registration["registration_id"] for j in jobs) == ["R1", "R2"]
    job = next(j for j in jobs if j.registration["registration_id"] == "R1")
    assert (job.action, job.template_id, job.event["event_id"], job.event["start"]) == (
        "before_start", 7, "E1", START,
    )  # fmt: skip
    assert (
        job.registration["email"] == "r1@example.org" and job.registration["contact"]["last_name"] == "Guest"
    )
    skipped = [s for s in sends(db) if s.registration_id == "R0"]
    assert [(s.status, s.reason, s.lease_owner, s.lease_until) for s in skipped] == [
        ("skipped", "no email address", None, None)
    ]
    assert {s.status for s in sends(db) if s.registration_id != "R0"} == {"pending"}  # leased, not yet sent


def test_naive_datetimes_are_utc():
    assert as_utc(datetime(2030, 1, 1)) == datetime(2030, 1, 1, tzinfo=UTC)
