"""Acceptance: confirmation (.ics), staff-only, spare-place and cancellation triggers, through
real Kafka; redelivered registration events never send twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from services.event_triggers.app import create_app
from tests.event_triggers.helpers import (
    attachment,
    event_message,
    outbound,
    parse_ics,
    publish,
    registration_message,
    template_message,
)
from tests.integration.harness import AUTH, eventually, produce, running

pytestmark = pytest.mark.timeout(180)


async def create_trigger(client, event_id: str, **spec) -> dict:
    body = {"name": spec.pop("name", "t"), "template_id": 7, **spec}

    async def created():
        reply = await client.post(f"/v1/mass-events/{event_id}/triggers", headers=AUTH, json=body)
        return reply.json() if reply.status_code == 201 else None

    return await eventually(created)


async def test_transitions_send_the_right_mail_once(kafka_broker, settings, clock):
    async with running(lambda s: create_app(s, clock), settings) as client:
        await publish(kafka_broker, settings, "mail.templates", [template_message(7)], "name")
        await publish(kafka_broker, settings, "crm.mass-events", [event_message("E1")], "event_id")
        confirm = await create_trigger(client, "E1", name="confirmation", action="registration")
        staff = await create_trigger(client, "E1", name="staff", action="registration", recipients="staff")
        spare = await create_trigger(client, "E1", name="spare", action="waitlist", recipients="both")
        cancel = await create_trigger(client, "E1", name="cancel", action="cancellation", recipients="both")

        first = datetime.now(UTC)
        r1 = registration_message("R1", occurred_at=first)
        s1 = registration_message("S1", role="staff", occurred_at=first)
        w1 = registration_message("W1", kind="registration.waitlisted", occurred_at=first)
        later = first + timedelta(seconds=1)
        # s1 twice: a redelivery of the same event.
        await publish(kafka_broker, settings, "crm.registrations", [r1, s1, w1, s1], "registration_id")
        # The transitions come a moment later, as in life: a waitlist mail that is still unsent when
        # the registrant has already moved off the waitlist is (rightly) skipped: test_pure.test_skip_reasons_are_checked_at_send_time.
        await eventually(lambda: _at_least(kafka_broker, settings, 3), timeout=60)
        messages = [
            registration_message("W1", kind="registration.moved_from_waitlist", occurred_at=later),
            registration_message("R1", kind="registration.cancelled", occurred_at=later),
            r1,  # a stale redelivery after the cancellation
        ]
        await publish(kafka_broker, settings, "crm.registrations", messages, "registration_id")

        mails = await eventually(lambda: _at_least(kafka_broker, settings, 5), timeout=60)
        await asyncio.sleep(2)  # room for a duplicate to show up, if there were one
        mails = await outbound(kafka_broker, settings, at_least=6, timeout=2)
        link = next(m for m in mails if m["correlation_id"] == f"et:{confirm['id']}:R1")["merge_data"][
            "links"
        ]
        path = link["calendar"].removeprefix("http://127.0.0.1:8103")
        served = await client.get(path)  # public: no API key
        forged = await client.get(path.replace("token=", "token=x"))

    by_trigger = sorted((m["correlation_id"], m["to"][0]) for m in mails)
    assert by_trigger == sorted(
        [
            (f"et:{confirm['id']}:R1", "r1@example.org"),
            (f"et:{staff['id']}:S1", "s1@example.org"),
            (f"et:{spare['id']}:W1", "w1@example.org"),
            (f"et:{confirm['id']}:W1", "w1@example.org"),
            (f"et:{cancel['id']}:R1", "r1@example.org"),
        ]
    )
    confirmation = next(m for m in mails if m["correlation_id"] == f"et:{confirm['id']}:R1")
    assert confirmation["template_id"] == "7"
    assert confirmation["merge_data"]["contact"]["first_name"] == "FirstR1"
    assert confirmation["merge_data"]["event"]["name"] == "Summit E1"
    assert confirmation["merge_data"]["event"]["start_time"] == "09:00"  # 08:00 UTC in Berlin
    assert confirmation["merge_data"]["links"]["calendar"].startswith(
        "http://127.0.0.1:8103/calendar/E1.ics?token="
    )
    calendar, vevent = parse_ics(attachment(confirmation, "invite.ics"))
    assert str(calendar["METHOD"]) == "REQUEST"
    start = vevent.decoded("DTSTART")
    assert str(start.tzinfo) == "Europe/Berlin" and start.hour == 9
    assert vevent["DTSTART"].params["TZID"] == "Europe/Berlin"
    assert [str(tz["TZID"]) for tz in calendar.walk("VTIMEZONE")] == ["Europe/Berlin"]
    assert str(vevent["UID"]) == "mass-event-E1@events.example.com"

    cancellation = next(m for m in mails if m["correlation_id"] == f"et:{cancel['id']}:R1")
    calendar, cancelled = parse_ics(attachment(cancellation, "invite.ics"))
    assert str(calendar["METHOD"]) == "CANCEL" and str(cancelled["STATUS"]) == "CANCELLED"
    assert str(cancelled["UID"]) == str(vevent["UID"])
    assert served.status_code == 200 and served.headers["content-type"].startswith("text/calendar")
    calendar, downloaded = parse_ics(served.content)
    assert str(calendar["METHOD"]) == "PUBLISH" and str(downloaded["UID"]) == str(vevent["UID"])
    assert forged.status_code == 404
    spare_mail = next(m for m in mails if m["correlation_id"] == f"et:{spare['id']}:W1")
    assert spare_mail["attachments"] == []  # no calendar entry for a waitlist place


async def _at_least(kafka_broker, settings, count: int) -> list[dict] | None:
    mails = await outbound(kafka_broker, settings, at_least=count, timeout=1)
    return mails if len(mails) >= count else None


async def test_trigger_templates_must_exist_and_be_active(kafka_broker, settings, clock):
    async with running(lambda s: create_app(s, clock), settings) as client:
        await publish(kafka_broker, settings, "crm.mass-events", [event_message("E2")], "event_id")
        # One key, so they stay in order: once 9 is known, 8 is too.
        await produce(
            kafka_broker.bootstrap,
            settings.topic("mail.templates"),
            [template_message(8, active=False), template_message(9)],
            key=b"templates",
        )
        ok = await create_trigger(client, "E2", name="ok", action="registration", template_id=9)
        assert ok["template_id"] == 9
        body = {"name": "x", "action": "registration"}
        for template_id, status in ((8, 422), (12345, 422)):
            reply = await client.post(
                "/v1/mass-events/E2/triggers", headers=AUTH, json={**body, "template_id": template_id}
            )
            assert reply.status_code == status, reply.text
            assert "template" in reply.json()["detail"]
        reply = await client.post(
            "/v1/mass-events/nope/triggers", headers=AUTH, json={**body, "template_id": 9}
        )
        assert reply.status_code == 404
        bad = {**body, "template_id": 9, "action": "certificate"}
        reply = await client.post("/v1/mass-events/E2/triggers", headers=AUTH, json=bad)
        assert reply.status_code == 422  # a certificate needs its document template
        bad["certificate_template"] = "{% for %}"
        reply = await client.post("/v1/mass-events/E2/triggers", headers=AUTH, json=bad)
        assert reply.status_code == 422 and "compile" in reply.json()["detail"]
        listed = (await client.get("/v1/mass-events/E2/triggers", headers=AUTH)).json()
        assert [t["name"] for t in listed] == ["ok"]
