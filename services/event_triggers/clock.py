"""The scheduler's notion of "now", injectable so tests (and demos) can move time.

Leases and bookkeeping timestamps always use the real clock; only *when sends and GDPR
deletions are due* is decided by this clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to (in-process tests)."""

    def __init__(self, start: datetime) -> None:
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = moment.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        self._now += delta


class FileClock:
    """Reads an ISO 8601 timestamp from a file on every call (subprocess tests, demos).

    A missing or unreadable file falls back to the system clock, so a half-written file never
    stops the scheduler.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def now(self) -> datetime:
        try:
            moment = datetime.fromisoformat(self.path.read_text().strip())
        except (OSError, ValueError):
            return datetime.now(UTC)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    @staticmethod
    def write(path: Path, moment: datetime) -> None:
        """Set the time atomically (rename), for the process that controls the clock."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(moment.astimezone(UTC).isoformat())
        tmp.replace(path)
