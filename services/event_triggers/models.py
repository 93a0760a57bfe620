"""Tables owned by the event triggers service."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


class MassEvent(SQLModel, table=True):
    """A CRM mass event, as last announced on crm.mass-events."""

    __tablename__ = "et_mass_event"

    event_id: str = Field(primary_key=True, max_length=100)
    event_number: str = Field(max_length=500)
    name: str = Field(max_length=500)
    start: datetime
    end: datetime
    time_zone: str = Field(default="UTC", max_length=64)
    location: str | None = Field(default=None, max_length=500)
    registration_start: datetime | None = None
    registration_end: datetime | None = None
    sub_events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    cancelled: bool = False
    updated_at: datetime = Field(default_factory=_now)


class DeliveryRecord(SQLModel, table=True):
    """A delivery status reported by the outbound gateway for mail this service asked for."""

    __tablename__ = "et_delivery_record"

    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(unique=True, max_length=36)
    correlation_id: str = Field(index=True, max_length=200)
    recipient: str = Field(max_length=320)
    status: str = Field(max_length=20)
    reason: str | None = Field(default=None, max_length=2_000)
    smtp_code: int | None = None
    occurred_at: datetime
