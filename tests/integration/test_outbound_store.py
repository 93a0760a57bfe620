"""The gateway's queries (Core statements on the tables) on SQLite and PostgreSQL: acceptance and
leases, suppression lookups, status transitions with their outbox events, the template check."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import update
from sqlmodel import select

from services.mass_mailer import outbound_store as store
from services.mass_mailer.models import Contact, OutboundMessage, Suppression
from services.mass_mailer.templates import store as template_store
from services.mass_mailer.templates.models import MailTemplate
from services.mass_mailer.templates.render import render_design
from shared.contracts import DeliveryEvent, DeliveryStatus, OutboundEmail
from shared.db import migrate, session_scope
from shared.outbox import OutboxEvent
from tests.mass_mailer.designs import one_column, text


@pytest.fixture
def db(db_url: str) -> str:
    migrate("mass_mailer", db_url)
    return db_url


def request(correlation_id: str = "c-1", **fields: object) -> OutboundEmail:
    return OutboundEmail.model_validate(
        {"correlation_id": correlation_id, "to": ["a@example.org"], "subject": "hi", "text": "x", **fields}
    )


def accept(db: str, mail: OutboundEmail, token: str, **options: object) -> store.Leased | None:
    with session_scope(db) as session:
        return store.accept_and_claim(session, mail, token, deadline_s=600, lease_s=60, **options)  # type: ignore[arg-type]


def stored(db: str, correlation_id: str) -> OutboundMessage:
    with session_scope(db) as session:
        row = session.exec(
            select(OutboundMessage).where(OutboundMessage.correlation_id == correlation_id)
        ).one()
        session.expunge(row)
        return row


def test_a_new_row_is_born_claimed_and_the_first_request_wins(db):
    first = accept(db, request(subject="first"), "owner-1", message_id="<m1@example.com>")
    assert first is not None and first.fresh and first.id > 0
    assert (first.status, first.attempts, first.message_id_header) == ("sending", 1, "<m1@example.com>")
    row = stored(db, "c-1")
    assert (row.status, row.attempts, row.lease_owner) == ("sending", 1, "owner-1")
    assert row.message_id_header == "<m1@example.com>" and row.recipient_status == {}

    assert accept(db, request(subject="second"), "owner-2") is None  # leased: someone works on it
    with session_scope(db) as session:  # the lease runs out (its holder died)
        session.execute(update(OutboundMessage).values(lease_until=store.now()))
    again = accept(db, request(subject="second"), "owner-2")
    assert again is not None and not again.fresh and again.lease_owner == "owner-2"
    assert OutboundEmail.model_validate_json(again.payload).subject == "first"

    plain = accept(db, request("c-2"), "owner-3")
    assert plain is not None and (plain.status, plain.attempts, plain.message_id_header) == (
        "queued",
        0,
        None,
    )


def test_transitions_need_the_lease_and_finish_queues_the_events_in_order(db):
    row = accept(db, request(to=["a@example.org", "b@example.org"]), "owner-1")
    assert row is not None
    with session_scope(db) as session, pytest.raises(store.LeaseLost):
        store.transition(session, row.id, "someone-else", status="handed_over")
    events = [
        DeliveryEvent(
            message_id=uuid.uuid4(),
            correlation_id="c-1",
            recipient=r,
            status=DeliveryStatus.SENT,
            reason=None,
        )
        for r in ("a@example.org", "b@example.org")
    ]
    statuses = {"a@example.org": ["sent", ""], "b@example.org": ["sent", ""]}
    with session_scope(db) as session:
        store.transition(session, row.id, "owner-1", status="handed_over")
        store.finish(
            session, row.id, "owner-1", events, status="sent", recipient_status=statuses, smtp_code=250
        )
    finished = stored(db, "c-1")
    assert (finished.status, finished.smtp_code, finished.lease_owner, finished.lease_until) == (
        "sent",
        250,
        None,
        None,
    )
    assert finished.recipient_status == statuses
    with session_scope(db) as session:
        queued = session.exec(select(OutboxEvent).order_by(OutboxEvent.id)).all()
        assert [e.topic for e in queued] == ["mail.delivery-events"] * 2
        assert [e.key for e in queued] == ["c-1", "c-1"]
        assert [json.loads(e.payload)["recipient"] for e in queued] == ["a@example.org", "b@example.org"]
        assert all(e.created_at is not None and e.headers == {} for e in queued)
    with session_scope(db) as session, pytest.raises(store.LeaseLost):  # the lease was given up
        store.transition(session, row.id, "owner-1", status="sent")


@pytest.mark.parametrize("others", [0, 20])  # a few recipients (one query each) and many (IN)
def test_suppressions_come_from_the_list_and_from_contact_flags(db, others):
    with session_scope(db) as session:
        session.add(Suppression(email="listed@example.org", reason="complained"))
        session.add(Contact(contact_id="k1", email="flagged@example.org", unsubscribed=True))
        session.add(Contact(contact_id="k2", email="fine@example.org"))
        session.add(Contact(contact_id="k3", email="listed@example.org", bounced=True))
    emails = ["Listed@Example.org", "flagged@example.org", "fine@example.org", "new@example.org"]
    emails += [f"other{i}@example.org" for i in range(others)]
    with session_scope(db) as session:
        found = store.suppressed(session, emails)
        assert store.suppressed(session, []) == {}
    assert found == {"Listed@Example.org": "complained", "flagged@example.org": "unsubscribed"}


def test_the_current_template_is_found_only_while_it_is_active(db):
    design = one_column(text("Hello {{ contact.first_name }}"))
    with session_scope(db) as session:
        template = template_store.create_template(
            session, {"name": "T", "subject": "Hi"}, render_design(design)
        )
        template_id = int(template.id)  # type: ignore[arg-type]
    with session_scope(db) as session:
        compiled = store.current_template(session, template_id)
        assert compiled is not None and compiled.template_id == template_id
        assert store.current_template(session, template_id + 1) is None
        session.execute(update(MailTemplate).values(active=False))
        assert store.current_template(session, template_id) is None
        session.execute(update(MailTemplate).values(active=True, deleted=True))
        assert store.current_template(session, template_id) is None
