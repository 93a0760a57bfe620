"""Helpers for the event triggers tests: messages the CRM and the mass mailer would publish."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from icalendar import Calendar

from tests.integration.harness import consume, produce

T0 = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)  # "now" of the controllable clock at the start


def event_message(
    event_id: str = "E1",
    *,
    kind: str = "mass_event.created",
    start: datetime = T0 + timedelta(days=10),
    hours: int = 8,
    time_zone: str = "Europe/Berlin",
    occurred_at: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "event_id": event_id,
        "event_number": f"EV-{event_id}",
        "name": f"Summit {event_id}",
        "start": start.isoformat(),
        "end": (start + timedelta(hours=hours)).isoformat(),
        "time_zone": time_zone,
        "location": "Hall 1, Berlin",
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        **extra,
    }


def registration_message(
    registration_id: str,
    *,
    kind: str = "registration.created",
    event_id: str = "E1",
    role: str = "participant",
    occurred_at: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "registration_id": registration_id,
        "event_id": event_id,
        "contact_id": f"C-{registration_id}",
        "role": role,
        "contact": {
            "email": f"{registration_id.lower()}@example.org",
            "first_name": f"First{registration_id}",
            "last_name": "Guest",
        },
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        **extra,
    }


def template_message(template_id: int = 7, *, active: bool = True, kind: str = "template.upserted") -> dict:
    return {
        "kind": kind,
        "template_id": template_id,
        "name": f"template {template_id}",
        "active": active,
        "subject": "Hello {{ contact.first_name }}",
        "occurred_at": datetime.now(UTC).isoformat(),
    }


async def publish(kafka, settings, topic: str, messages: list[dict], key_field: str) -> None:
    for message in messages:
        await produce(kafka.bootstrap, settings.topic(topic), [message], key=message[key_field].encode())


async def outbound(kafka, settings, at_least: int, timeout: float = 30.0) -> list[dict]:
    """Every mail published so far (reads until ``at_least`` arrived or the timeout passed)."""
    records = await consume(kafka.bootstrap, settings.topic("mail.outbound.transactional"), at_least, timeout)
    return [json.loads(r.value) for r in records]


def attachment(mail: dict, filename: str) -> bytes:
    found = [a for a in mail["attachments"] if a["filename"] == filename]
    assert len(found) == 1, [a["filename"] for a in mail["attachments"]]
    return base64.b64decode(found[0]["content_b64"])


def parse_ics(raw: bytes) -> tuple[Calendar, Any]:
    calendar = Calendar.from_ical(raw)
    events = [c for c in calendar.walk("VEVENT")]
    assert len(events) == 1
    return calendar, events[0]
