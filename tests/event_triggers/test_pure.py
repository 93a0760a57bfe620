"""Pure logic: due times (DST), trigger matching and transitions, .ics, certificates, clocks."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar

from services.event_triggers import rules
from services.event_triggers.certificate import CertificateError, certificate_for, check_template
from services.event_triggers.clock import FileClock, ManualClock
from services.event_triggers.ics import EventInfo, build_ics, calendar_link, link_token, token_valid
from services.event_triggers.schedule import due_at, gdpr_deletion_at

BERLIN = ZoneInfo("Europe/Berlin")


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def test_days_before_keep_the_local_time_across_dst():
    start = local(2030, 3, 31, 10, 0)  # Sunday after the spring change (2030-03-31 02:00 -> 03:00)
    due = due_at("before_start", 2, "days", None, start, start, "Europe/Berlin")
    assert due.astimezone(BERLIN) == local(2030, 3, 29, 10, 0)
    assert start - due == timedelta(days=2, hours=-1)  # 47 real hours
    assert due_at("before_start", 48, "hours", None, start, start, "Europe/Berlin") == start.astimezone(
        UTC
    ) - timedelta(hours=48)


def test_local_time_of_day_in_the_event_zone():
    start = local(2030, 10, 27, 18, 0)  # the autumn change day
    due = due_at("before_start", 1, "days", "09:30", start, start, "Europe/Berlin")
    assert due.astimezone(BERLIN).replace(tzinfo=None) == datetime(2030, 10, 26, 9, 30)
    assert due.utcoffset() == timedelta(0) and due == datetime(2030, 10, 26, 7, 30, tzinfo=UTC)
    end = local(2030, 3, 30, 20, 0)
    thanks = due_at("after_end", 1, "days", "02:30", end, end, "Europe/Berlin")  # 02:30 does not exist
    assert thanks.astimezone(BERLIN).replace(tzinfo=None) == datetime(2030, 3, 31, 3, 30)
    ambiguous = due_at(
        "after_end",
        0,
        "minutes",
        "02:30",
        local(2030, 10, 27, 0, 0),
        local(2030, 10, 27, 1, 0),
        "Europe/Berlin",
    )
    assert ambiguous == datetime(2030, 10, 27, 0, 30, tzinfo=UTC)  # first 02:30 (still CEST)


def test_minutes_after_end_and_unknown_zone_fall_back_to_utc():
    end = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert due_at("certificate", 90, "minutes", None, end, end, "Mars/Olympus") == end + timedelta(minutes=90)
    with pytest.raises(ValueError):
        due_at("registration", 1, "days", None, end, end, "UTC")


def test_gdpr_deletion_date():
    end = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert gdpr_deletion_at(end, 30, False) == end + timedelta(days=30)
    assert gdpr_deletion_at(end, None, False) is None
    assert gdpr_deletion_at(end, 30, True) is None


@pytest.mark.parametrize(
    ("recipients", "role", "expected"),
    [("participants", "participant", True), ("participants", "staff", False), ("staff", "staff", True),
     ("staff", "participant", False), ("both", "staff", True), ("both", "participant", True)],
)  # fmt: skip
def test_recipient_groups(recipients, role, expected):
    trigger = rules.TriggerFilter(recipients, None, ())
    assert rules.matches(trigger, rules.Registrant(role, None, None)) is expected


def test_sub_event_and_function_filters():
    trigger = rules.TriggerFilter("both", "Workshop A", ("speaker",))
    assert rules.matches(trigger, rules.Registrant("staff", "Workshop A", "speaker"))
    assert not rules.matches(trigger, rules.Registrant("staff", "Workshop B", "speaker"))
    assert not rules.matches(trigger, rules.Registrant("staff", "Workshop A", "usher"))
    assert not rules.matches(trigger, rules.Registrant("staff", "Workshop A", None))


def test_transitions():
    assert rules.transition_action(None, "registered") == "registration"
    assert rules.transition_action("waitlisted", "registered") == "registration"
    assert rules.transition_action("registered", "registered") is None  # redelivery
    assert rules.transition_action(None, "waitlisted") == "waitlist"
    assert rules.transition_action("waitlisted", "waitlisted") is None
    assert rules.transition_action("registered", "cancelled") == "cancellation"
    assert rules.transition_action("cancelled", "cancelled") is None
    assert rules.transition_action("registered", "attended") is None
    assert rules.correlation_id(12, "R-1") == "et:12:R-1"


def test_skip_reasons_are_checked_at_send_time():
    ok = dict(trigger_active=True, trigger_matches=True, registration_status="registered", has_email=True,
              event_cancelled=False, event_started=False, template_usable=True)  # fmt: skip
    assert rules.skip_reason("before_start", **ok) is None
    assert (
        rules.skip_reason("before_start", **{**ok, "registration_status": "cancelled"})
        == "registration is cancelled"
    )
    assert rules.skip_reason("before_start", **{**ok, "event_started": True}) == "event already started"
    assert rules.skip_reason("certificate", **ok) == "registration is registered"
    assert (
        rules.skip_reason("certificate", **{**ok, "registration_status": "attended", "event_started": True})
        is None
    )
    assert (
        rules.skip_reason(
            "cancellation", **{**ok, "registration_status": "cancelled", "event_cancelled": True}
        )
        is None
    )
    assert rules.skip_reason("after_end", **{**ok, "event_cancelled": True}) == "event cancelled"
    assert rules.skip_reason("registration", **{**ok, "trigger_active": False}) == "trigger deactivated"
    assert (
        rules.skip_reason("registration", **{**ok, "template_usable": False})
        == "template deleted or inactive"
    )
    assert rules.skip_reason("registration", **{**ok, "has_email": False}) == "no email address"


def event(sequence: int = 0, **changes) -> EventInfo:
    values = dict(event_id="E1", name="Summit", start=local(2030, 6, 1, 9, 0), end=local(2030, 6, 1, 17, 0),
                  time_zone="Europe/Berlin", location="Hall 1", sequence=sequence, cancelled=False)  # fmt: skip
    return EventInfo(**{**values, **changes})


def parse(raw: bytes) -> tuple[Calendar, object]:
    calendar = Calendar.from_ical(raw)
    return calendar, calendar.walk("VEVENT")[0]


def test_ics_round_trip_zone_uid_and_sequence():
    stamp = datetime(2030, 1, 1, tzinfo=UTC)
    calendar, first = parse(
        build_ics(event(), method="REQUEST", domain="x.test", organizer="o@x.test", stamp=stamp)
    )
    assert str(calendar["METHOD"]) == "REQUEST"
    assert first.decoded("DTSTART") == local(2030, 6, 1, 9, 0)
    assert str(first.decoded("DTSTART").tzinfo) == "Europe/Berlin"
    assert first["DTSTART"].params["TZID"] == "Europe/Berlin"
    tz = calendar.walk("VTIMEZONE")[0]
    assert str(tz["TZID"]) == "Europe/Berlin"
    moved = event(1, start=local(2030, 6, 2, 9, 0), end=local(2030, 6, 2, 17, 0))
    _, second = parse(build_ics(moved, method="REQUEST", domain="x.test", organizer="o@x.test", stamp=stamp))
    assert str(second["UID"]) == str(first["UID"]) == "mass-event-E1@x.test"
    assert int(second["SEQUENCE"]) > int(first["SEQUENCE"])
    cancel, third = parse(
        build_ics(moved, method="CANCEL", domain="x.test", organizer="o@x.test", stamp=stamp)
    )
    assert str(cancel["METHOD"]) == "CANCEL" and str(third["STATUS"]) == "CANCELLED"


def test_ics_escapes_hostile_text():
    nasty = event(name="Party\r\nBEGIN:VEVENT\r\nUID:evil", location="a;b,c\\d")
    raw = build_ics(nasty, method="REQUEST", domain="x.test", organizer="o@x.test", stamp=datetime.now(UTC))
    calendar = Calendar.from_ical(raw)
    assert len(calendar.walk("VEVENT")) == 1
    assert str(calendar.walk("VEVENT")[0]["SUMMARY"]) == "Party\nBEGIN:VEVENT\nUID:evil"
    assert str(calendar.walk("VEVENT")[0]["LOCATION"]) == "a;b,c\\d"


def test_calendar_links_are_signed_per_event():
    link = calendar_link("https://events.example.com/", b"k", "E 1/2")
    assert link.startswith("https://events.example.com/calendar/E%201%2F2.ics?token=")
    token = link.rsplit("=", 1)[1] if link.endswith("=") else link.split("token=")[1]
    assert token_valid(b"k", "E 1/2", token)
    assert not token_valid(b"k", "E2", token)
    assert not token_valid(b"other", "E 1/2", token)
    assert link_token(b"k", "E1") != link_token(b"k", "E2")


def test_certificate_pdf_text(tmp_path):
    data = {"contact": {"first_name": "Zoë", "last_name": "Ångström"}, "event": {"name": "Summit 2030"}}
    pdf = certificate_for("{{ contact.first_name }} {{ contact.last_name }}\nattended {{ event.name }}", data)
    path = tmp_path / "c.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    assert "Zoë Ångström" in text and "Summit 2030" in text and "Certificate of attendance" in text


def test_certificate_templates_are_sandboxed():
    with pytest.raises(CertificateError):
        check_template("{% if %}")
    with pytest.raises(CertificateError):
        certificate_for("{{ ''.__class__.__mro__[1].__subclasses__() }}", {})
    with pytest.raises(CertificateError):
        check_template("x" * 30_000)


def test_clocks(tmp_path):
    manual = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    manual.advance(timedelta(hours=1))
    assert manual.now() == datetime(2030, 1, 1, 1, tzinfo=UTC)
    path = tmp_path / "clock"
    file_clock = FileClock(path)
    assert abs(file_clock.now() - datetime.now(UTC)) < timedelta(minutes=1)  # no file: system time
    FileClock.write(path, datetime(2031, 5, 5, 12, tzinfo=UTC))
    assert file_clock.now() == datetime(2031, 5, 5, 12, tzinfo=UTC)
    path.write_text("garbage")
    assert file_clock.now().year == datetime.now(UTC).year
