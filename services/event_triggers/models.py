"""Tables owned by the event triggers service."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


class MassEvent(SQLModel, table=True):
    """A CRM mass event, as last announced on crm.mass-events, plus our own per-event settings."""

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
    # iCalendar SEQUENCE: raised whenever something a calendar shows changes.
    sequence: int = 0
    # GDPR: delete form answers this many days after the end (None: off).
    gdpr_delete_after_days: int | None = None
    gdpr_cancelled: bool = False
    gdpr_done_at: datetime | None = None


class Registration(SQLModel, table=True):
    __tablename__ = "et_registration"

    registration_id: str = Field(primary_key=True, max_length=100)
    event_id: str = Field(index=True, max_length=100)
    contact_id: str = Field(max_length=100)
    email: str | None = Field(default=None, max_length=320)
    contact: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    role: str = Field(default="participant", max_length=20)
    function: str | None = Field(default=None, max_length=500)
    sub_event: str | None = Field(default=None, max_length=500)
    # registered, waitlisted, cancelled, attended
    status: str = Field(max_length=20)
    answers: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    answered: bool = False
    answers_deleted_at: datetime | None = None
    updated_at: datetime
    created_at: datetime = Field(default_factory=_now)


class Trigger(SQLModel, table=True):
    __tablename__ = "et_trigger"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(index=True, max_length=100)
    name: str = Field(max_length=200)
    active: bool = True
    sub_event: str | None = Field(default=None, max_length=500)
    template_id: int
    # participants, staff, both
    recipients: str = Field(default="participants", max_length=20)
    functions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # registration, cancellation, waitlist, before_start, after_end, certificate
    action: str = Field(max_length=20)
    offset_value: int = 0
    offset_unit: str = Field(default="days", max_length=10)
    local_time: str | None = Field(default=None, max_length=5)
    certificate_template: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    sender_identity: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class ScheduledSend(SQLModel, table=True):
    """One (trigger, registration) mail: a durable timer until it is due, then its outcome.

    The unique constraint is the "at most once, ever" guarantee; the lease says which instance is
    publishing it right now (a crashed instance's lease expires and another one takes over).
    """

    __tablename__ = "et_send"
    __table_args__ = (
        UniqueConstraint("trigger_id", "registration_id", name="uq_et_send_trigger_registration"),
        Index("ix_et_send_status_due", "status", "due_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    trigger_id: int = Field(index=True)
    registration_id: str = Field(max_length=100)
    event_id: str = Field(index=True, max_length=100)
    due_at: datetime
    # pending, sent, cancelled, skipped
    status: str = Field(default="pending", max_length=20)
    reason: str | None = Field(default=None, max_length=500)
    correlation_id: str = Field(max_length=200)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = None
    sent_at: datetime | None = None
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class TemplateEntry(SQLModel, table=True):
    """The mass mailer's template catalogue as announced on mail.templates."""

    __tablename__ = "et_template"

    template_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    name: str = Field(max_length=200)
    active: bool = True
    deleted: bool = False
    subject: str = Field(default="", max_length=2_000)
    updated_at: datetime


class ServiceSecret(SQLModel, table=True):
    """Generated secrets shared by all instances (e.g. the calendar-link key when none is configured)."""

    __tablename__ = "et_secret"

    name: str = Field(primary_key=True, max_length=50)
    value: str = Field(max_length=200)


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
