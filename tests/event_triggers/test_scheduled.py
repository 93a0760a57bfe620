"""Acceptance with a controllable clock: reminders move with the event, cancelled registrations
get none, certificates only for attendees, GDPR deletion at the computed date."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from services.event_triggers.app import create_app
from tests.event_triggers.helpers import (
    T0,
    attachment,
    event_message,
    outbound,
    publish,
    registration_message,
    template_message,
)
from tests.event_triggers.test_transitions import create_trigger
from tests.integration.harness import AUTH, consume, eventually, running

pytestmark = pytest.mark.timeout(180)


async def sends(client, trigger_id: int) -> dict[str, dict]:
    rows = (await client.get(f"/v1/triggers/{trigger_id}/sends", headers=AUTH)).json()
    return {r["registration_id"]: r for r in rows}


def iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


async def test_reminder_moves_with_the_event_and_skips_cancelled(kafka_broker, settings, clock):
    start = T0 + timedelta(days=10)
    async with running(lambda s: create_app(s, clock), settings) as client:
        await publish(kafka_broker, settings, "mail.templates", [template_message(7)], "name")
        await publish(
            kafka_broker, settings, "crm.mass-events", [event_message("E3", start=start)], "event_id"
        )
        reminder = await create_trigger(client, "E3", name="reminder", action="before_start", offset_value=2)
        created = datetime.now(UTC)
        registrations = [registration_message("R1", event_id="E3", occurred_at=created),
                         registration_message("R2", event_id="E3", occurred_at=created)]  # fmt: skip
        await publish(kafka_broker, settings, "crm.registrations", registrations, "registration_id")
        planned = await eventually(lambda: _with(client, reminder["id"], {"R1", "R2"}))
        assert iso(planned["R1"]["due_at"]) == start - timedelta(days=2)

        cancel = registration_message("R2", event_id="E3", kind="registration.cancelled",
                                      occurred_at=created + timedelta(seconds=1))  # fmt: skip
        moved = event_message("E3", kind="mass_event.updated", start=start + timedelta(days=1))
        await publish(kafka_broker, settings, "crm.registrations", [cancel], "registration_id")
        await publish(kafka_broker, settings, "crm.mass-events", [moved], "event_id")

        async def rescheduled() -> dict | None:
            rows = await sends(client, reminder["id"])
            moved_ok = iso(rows["R1"]["due_at"]) == start + timedelta(days=1) - timedelta(days=2)
            return rows if moved_ok and rows["R2"]["status"] == "cancelled" else None

        await eventually(rescheduled)
        clock.set(start - timedelta(days=2) + timedelta(minutes=5))  # the old due time: nothing is due
        await asyncio.sleep(1)  # ten scheduler passes
        assert (await sends(client, reminder["id"]))["R1"]["status"] == "pending"

        clock.set(start - timedelta(days=1))
        rows = await eventually(lambda: _status(client, reminder["id"], "R1", "sent"))
        assert rows["R2"]["status"] == "cancelled" and rows["R2"]["reason"] == "registration cancelled"
        # Redelivered registration and event messages after the send change nothing.
        await publish(kafka_broker, settings, "crm.registrations", registrations, "registration_id")
        await publish(kafka_broker, settings, "crm.mass-events", [moved], "event_id")
        await asyncio.sleep(2)
        mails = await outbound(kafka_broker, settings, at_least=2, timeout=2)
    assert [m["correlation_id"] for m in mails] == [f"et:{reminder['id']}:R1"]
    assert mails[0]["merge_data"]["event"]["start_date"] == "2030-03-12"


async def _with(client, trigger_id: int, ids: set[str]) -> dict | None:
    rows = await sends(client, trigger_id)
    return rows if set(rows) == ids else None


async def _status(client, trigger_id: int, registration_id: str, status: str) -> dict | None:
    rows = await sends(client, trigger_id)
    return rows if rows.get(registration_id, {}).get("status") == status else None


CERTIFICATE = (
    "This certifies that {{ contact.first_name }} {{ contact.last_name }}\nattended {{ event.name }}."
)


async def test_certificates_only_for_attendees(kafka_broker, settings, clock, tmp_path):
    start = T0 + timedelta(days=3)
    async with running(lambda s: create_app(s, clock), settings) as client:
        await publish(kafka_broker, settings, "mail.templates", [template_message(7)], "name")
        await publish(
            kafka_broker, settings, "crm.mass-events", [event_message("E4", start=start)], "event_id"
        )
        trigger = await create_trigger(client, "E4", name="certificate", action="certificate",
                                       offset_value=1, offset_unit="hours", certificate_template=CERTIFICATE)  # fmt: skip
        t = datetime.now(UTC)
        await publish(kafka_broker, settings, "crm.registrations", [
            registration_message("A1", event_id="E4", occurred_at=t),
            registration_message("N1", event_id="E4", occurred_at=t),
            registration_message("A1", event_id="E4", kind="registration.attended", occurred_at=t + timedelta(seconds=1)),
        ], "registration_id")  # fmt: skip
        await eventually(lambda: _with(client, trigger["id"], {"A1", "N1"}))
        clock.set(start + timedelta(hours=9, minutes=1))  # end (8 h) + 1 h
        rows = await eventually(lambda: _status(client, trigger["id"], "A1", "sent"))
        assert rows["N1"]["status"] == "skipped" and rows["N1"]["reason"] == "registration is registered"
        mails = await outbound(kafka_broker, settings, at_least=1)
    assert [m["to"] for m in mails] == [["a1@example.org"]]
    pdf = tmp_path / "certificate.pdf"
    pdf.write_bytes(attachment(mails[0], "certificate.pdf"))
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "FirstA1 Guest" in text and "Summit E4" in text
    assert [a["filename"] for a in mails[0]["attachments"]] == ["certificate.pdf"]


async def test_gdpr_deletion_at_the_computed_date_keeps_the_flag_and_can_be_cancelled(
    kafka_broker, settings, clock
):
    start = T0 + timedelta(days=1)
    end = start + timedelta(hours=8)
    async with running(lambda s: create_app(s, clock), settings) as client:
        await publish(
            kafka_broker, settings, "crm.mass-events", [event_message("E5", start=start)], "event_id"
        )
        via_api = await client.post("/v1/mass-events", headers=AUTH, json=event_message("E6", start=start))
        assert via_api.status_code == 202, via_api.text
        bad_zone = event_message("E7", start=start, time_zone="Europe/Atlantis")
        assert (await client.post("/v1/mass-events", headers=AUTH, json=bad_zone)).status_code == 422
        t = datetime.now(UTC)
        answers = {"diet": "vegan", "t-shirt": "L"}
        await publish(kafka_broker, settings, "crm.registrations", [
            registration_message("G1", event_id="E5", form_answers=answers, occurred_at=t),
            registration_message("G2", event_id="E5", form_answers=answers, occurred_at=t),
            registration_message("K1", event_id="E6", form_answers=answers, occurred_at=t),
        ], "registration_id")  # fmt: skip
        # The HTTP path publishes to the same topic.
        via_api = await client.post(
            "/v1/registrations", headers=AUTH, json=registration_message("G3", event_id="E5")
        )
        assert via_api.status_code == 202, via_api.text
        invalid = await client.post("/v1/registrations", headers=AUTH, json={"kind": "registration.created"})
        assert invalid.status_code == 422

        async def registration(rid: str) -> dict | None:
            reply = await client.get(f"/v1/registrations/{rid}", headers=AUTH)
            return reply.json() if reply.status_code == 200 else None

        for rid in ("G1", "G2", "G3", "K1"):
            await eventually(lambda rid=rid: registration(rid))

        async def event_stored() -> bool:
            return (await client.get("/v1/mass-events/E6", headers=AUTH)).status_code == 200

        await eventually(event_stored)
        # Off by default.
        event = (await client.get("/v1/mass-events/E5", headers=AUTH)).json()
        assert event["gdpr"]["deletion_at"] is None
        for event_id in ("E5", "E6"):
            reply = await client.put(
                f"/v1/mass-events/{event_id}/gdpr", headers=AUTH, json={"delete_after_days": 30}
            )
            assert reply.status_code == 200, reply.text
            assert iso(reply.json()["gdpr"]["deletion_at"]) == end + timedelta(days=30)
        assert iso((await registration("G1"))["gdpr_deletion_at"]) == end + timedelta(days=30)
        reply = await client.delete("/v1/mass-events/E6/gdpr", headers=AUTH)
        assert reply.status_code == 200 and reply.json()["gdpr"]["deletion_at"] is None

        manual = await client.delete("/v1/registrations/G2/form-answers", headers=AUTH)
        assert manual.status_code == 200
        assert manual.json()["form_answers"] == {} and manual.json()["answered"] is True

        clock.set(end + timedelta(days=29, hours=23))
        await asyncio.sleep(1)  # ten scheduler passes: a day too early, nothing happens
        assert (await registration("G1"))["form_answers"] == answers

        clock.set(end + timedelta(days=30, minutes=1))
        deleted = await eventually(lambda: _deleted(client, "G1"))
        assert deleted["answered"] is True and deleted["gdpr_deletion_at"] is None
        assert (await registration("K1"))["form_answers"] == answers  # cancelled beforehand
        assert (await registration("G3"))["answered"] is False
        late = await client.delete("/v1/mass-events/E5/gdpr", headers=AUTH)
        assert late.status_code == 409
        records = await consume(
            kafka_broker.bootstrap, settings.topic("events.gdpr-deletions"), 3, timeout=10
        )
    published = sorted(
        (json.loads(r.value)["registration_id"], json.loads(r.value)["reason"]) for r in records
    )
    assert published == [("G1", "automatic"), ("G2", "manual")]


async def _deleted(client, rid: str) -> dict | None:
    body = (await client.get(f"/v1/registrations/{rid}", headers=AUTH)).json()
    return body if body["form_answers"] == {} else None
