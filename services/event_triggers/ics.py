"""iCalendar invitations (.ics) and signed "add to calendar" links.

The UID is stable per event, so calendar clients replace the entry when it changes; SEQUENCE
rises with each change; times carry the event's TZID with a matching VTIMEZONE.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from icalendar import Calendar, Event, vCalAddress, vText

from services.event_triggers.schedule import zone
from shared.timeutil import as_utc

PRODID = "-//mailsvc//event triggers//EN"


@dataclass(frozen=True)
class EventInfo:
    event_id: str
    name: str
    start: datetime
    end: datetime
    time_zone: str
    location: str | None
    sequence: int
    cancelled: bool


def event_uid(event_id: str, domain: str) -> str:
    return f"mass-event-{event_id}@{domain}"


def build_ics(
    event: EventInfo,
    *,
    method: str,
    domain: str,
    organizer: str,
    stamp: datetime,
    attendee: str | None = None,
) -> bytes:
    """One VEVENT; ``method`` is REQUEST (invitation/update), CANCEL or PUBLISH (download)."""
    tz = zone(event.time_zone)
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", method)
    vevent = Event()
    vevent.add("uid", event_uid(event.event_id, domain))
    vevent.add("dtstamp", as_utc(stamp))
    vevent.add("dtstart", as_utc(event.start).astimezone(tz))
    vevent.add("dtend", as_utc(event.end).astimezone(tz))
    vevent.add("summary", event.name)
    if event.location:
        vevent.add("location", event.location)
    cancelled = method == "CANCEL" or event.cancelled
    vevent.add("sequence", event.sequence)
    vevent.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    owner = vCalAddress(f"mailto:{organizer}")
    vevent.add("organizer", owner)
    if attendee:
        guest = vCalAddress(f"mailto:{attendee}")
        guest.params["role"] = vText("REQ-PARTICIPANT")
        guest.params["partstat"] = vText("ACCEPTED")
        guest.params["rsvp"] = vText("FALSE")
        vevent.add("attendee", guest)
    calendar.add_component(vevent)
    if str(tz) != "UTC":
        # Transitions around the event only: keeps the attachment small.
        first = as_utc(event.start).astimezone(tz).date().replace(month=1, day=1)
        last = as_utc(event.end).astimezone(tz).date().replace(month=12, day=31)
        calendar.add_missing_timezones(first_date=first.replace(year=first.year - 1), last_date=last)
    return calendar.to_ical()


def link_token(secret: bytes, event_id: str) -> str:
    digest = hmac.new(secret, f"calendar|{event_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


def token_valid(secret: bytes, event_id: str, token: str) -> bool:
    # bytes: compare_digest raises TypeError on non-ASCII str (a hostile link must be a 404)
    return hmac.compare_digest(link_token(secret, event_id).encode(), token.encode())


def calendar_link(base_url: str, secret: bytes, event_id: str) -> str:
    return (
        f"{base_url.rstrip('/')}/calendar/{quote(event_id, safe='')}.ics?token={link_token(secret, event_id)}"
    )
