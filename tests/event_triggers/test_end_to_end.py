"""End to end: a template made in the mass mailer, a trigger here, a registration on Kafka ->
the gateway renders the template with our merge data and the mail reaches SMTP once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from services.event_triggers.app import create_app as create_triggers
from services.mass_mailer.app import create_app as create_mailer
from shared.db import in_transaction
from shared.secretbox import generate_master_key
from tests.event_triggers.conftest import trigger_settings
from tests.event_triggers.helpers import event_message, parse_ics, publish, registration_message
from tests.event_triggers.test_transitions import create_trigger
from tests.integration.harness import AUTH, eventually, running
from tests.mass_mailer.designs import one_column, text

pytestmark = pytest.mark.timeout(180)

BODY = (
    "Hello {{ contact.first_name }}, see you at {{ event.name }} on {{ event.start_date }} "
    "at {{ event.start_time }} ({{ registration.role }}). Calendar: {{ links.calendar }}"
)
DESIGN = one_column(text(BODY))


async def create_template(mailer, settings, body: dict) -> int:
    """Through the mass mailer's templates API when it is wired, else through its store (which
    announces the template on mail.templates the same way)."""
    reply = await mailer.post("/v1/templates", headers=AUTH, json=body)
    if reply.status_code != 404:
        assert reply.status_code == 201, reply.text
        return int(reply.json()["id"])
    from services.mass_mailer.templates import render
    from services.mass_mailer.templates import store as template_store

    rendered = render.render_design(body["design"])

    def work(session) -> int:
        row = template_store.create_template(
            session, {"name": body["name"], "subject": body["subject"]}, rendered
        )
        return int(row.id)

    return await in_transaction(settings.service_database_url("mass_mailer"), work)


async def test_confirmation_through_the_gateway_arrives_once(
    kafka_broker, unique, tmp_path, clock, smtp_sink
):
    settings = trigger_settings(
        kafka_broker, unique, tmp_path,
        smtp_host=smtp_sink.host, smtp_port=smtp_sink.port, master_key=generate_master_key(),
    )  # fmt: skip
    async with (
        running(create_mailer, settings) as mailer,
        running(lambda s: create_triggers(s, clock), settings) as triggers,
    ):
        template = {
            "name": "Confirmation",
            "subject": "You are in, {{ contact.first_name }}",
            "design": DESIGN,
        }
        template_id = await create_template(mailer, settings, template)
        await publish(kafka_broker, settings, "crm.mass-events", [event_message("E9")], "event_id")
        trigger = await create_trigger(
            triggers, "E9", name="confirmation", action="registration", template_id=template_id
        )
        message = registration_message("Z1", event_id="E9", occurred_at=datetime.now(UTC))
        await publish(kafka_broker, settings, "crm.registrations", [message, message], "registration_id")

        async def delivered() -> dict | None:
            stats = (await triggers.get(f"/v1/triggers/{trigger['id']}/stats", headers=AUTH)).json()
            return stats if stats["deliveries"].get("sent") == 1 else None

        stats = await eventually(delivered, timeout=60)
        await asyncio.sleep(2)  # room for a duplicate, if there were one
    assert stats["sends"] == {"sent": 1}
    assert len(smtp_sink.accepted) == 1
    mail = smtp_sink.accepted[0].message
    assert str(mail["Subject"]) == "You are in, FirstZ1"
    assert str(mail["To"]) == "z1@example.org"
    text = mail.get_body(("plain",)).get_content()
    assert "Hello FirstZ1, see you at Summit E9 on 2030-03-11 at 09:00 (participant)." in text
    assert "/calendar/E9.ics?token=" in text
    ics = [p for p in mail.iter_attachments() if p.get_filename() == "invite.ics"]
    assert len(ics) == 1 and ics[0].get_content_type() == "text/calendar"
    calendar, vevent = parse_ics(ics[0].get_payload(decode=True))
    assert str(calendar["METHOD"]) == "REQUEST"
    assert str(vevent["UID"]) == "mass-event-E9@events.example.com"
