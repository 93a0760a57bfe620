"""When a scheduled send is due (pure functions; all results in UTC).

"N days before the start at 09:00" is computed on the event's local calendar (zoneinfo), so it
stays at 09:00 local across a DST change; minutes and hours are exact durations. A local time
that does not exist (spring-forward gap) resolves forward by the gap; an ambiguous one (autumn)
takes the first occurrence.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.timeutil import as_utc

SCHEDULED_ACTIONS = ("before_start", "after_end", "certificate")
IMMEDIATE_ACTIONS = ("registration", "cancellation", "waitlist")
UNITS = ("minutes", "hours", "days")


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def parse_local_time(value: str | None) -> time | None:
    if value is None:
        return None
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def _localize(wall: datetime, tz: ZoneInfo) -> datetime:
    """Attach ``tz`` to a naive wall time: fold=0 means a gap time keeps the pre-change offset
    (so it lands after the gap) and an ambiguous time is its first occurrence."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def due_at(
    action: str,
    offset_value: int,
    offset_unit: str,
    local_time: str | None,
    start: datetime,
    end: datetime,
    time_zone: str,
) -> datetime:
    """The moment a scheduled trigger fires for an event with this start/end."""
    if action not in SCHEDULED_ACTIONS:
        raise ValueError(f"{action!r} is not a scheduled action")
    tz = zone(time_zone)
    sign = -1 if action == "before_start" else 1
    anchor = as_utc(start if action == "before_start" else end)
    if offset_unit == "days":
        wall = anchor.astimezone(tz).replace(tzinfo=None) + sign * timedelta(days=offset_value)
    else:
        moment = anchor + sign * timedelta(**{offset_unit: offset_value})
        wall = moment.astimezone(tz).replace(tzinfo=None)
    at = parse_local_time(local_time)
    if at is not None:
        wall = datetime.combine(wall.date(), at)
    return _localize(wall, tz)


def gdpr_deletion_at(end: datetime, days: int | None, cancelled: bool) -> datetime | None:
    """When the form answers of an event are deleted automatically (None: not scheduled)."""
    if days is None or cancelled:
        return None
    return as_utc(end) + timedelta(days=days)
