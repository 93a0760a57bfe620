"""Tables of mailings, per-recipient deliveries and persisted send rates."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


class Mailing(SQLModel, table=True):
    """Status: draft -> scheduled -> sending <-> paused -> completed | cancelled.

    ``freeze_cursor``/``frozen`` track the keyset freeze of the membership; ``requeue_cursor`` is
    set on resume and walks the still-queued deliveries to publish them again. ``plan_owner`` and
    ``plan_until`` are a lease: one scheduler instance plans a mailing at a time.
    """

    __tablename__ = "mm_mailing"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    target_group_id: str = Field(max_length=100)
    template_id: int
    template_version_id: int | None = None
    sender_identity: str | None = Field(default=None, max_length=200)
    survey_url: str | None = Field(default=None, max_length=2_000)
    calendar_url: str | None = Field(default=None, max_length=2_000)
    status: str = Field(default="draft", index=True, max_length=20)
    scheduled_at: datetime | None = Field(default=None, index=True)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    frozen: bool = False
    freeze_cursor: str | None = Field(default=None, max_length=100)
    batches: int = 0
    requeue_cursor: int | None = None
    plan_owner: str | None = Field(default=None, max_length=64)
    plan_until: datetime | None = None
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class Delivery(SQLModel, table=True):
    """One recipient of one mailing. ``sending`` rows carry a lease; ``handed_over`` means the
    final dot went to the relay (after a crash it counts as sent, never sent twice)."""

    __tablename__ = "mm_delivery"
    __table_args__ = (
        UniqueConstraint("mailing_id", "contact_id", name="uq_mm_delivery_mailing_contact"),
        Index("ix_mm_delivery_mailing_status", "mailing_id", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    mailing_id: int
    contact_id: str = Field(max_length=100)
    email: str | None = Field(default=None, max_length=320)
    status: str = Field(default="queued", max_length=20)
    attempts: int = 0
    last_reply: str | None = Field(default=None, max_length=1_000)
    message_id_header: str | None = Field(default=None, max_length=998)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = None
    next_attempt_at: datetime | None = None
    queued_at: datetime = Field(default_factory=_now)
    sent_at: datetime | None = None
    opened_at: datetime | None = None
    updated_at: datetime = Field(default_factory=_now)


class RateState(SQLModel, table=True):
    """The adaptive send rate of a token bucket (relay or recipient domain), kept across restarts."""

    __tablename__ = "mm_rate_state"

    key: str = Field(primary_key=True, max_length=300)
    rate_per_s: float
    updated_at: datetime = Field(default_factory=_now)
