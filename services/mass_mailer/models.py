"""Tables owned by the mass mailer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


class Contact(SQLModel, table=True):
    """A CRM contact as far as mailing is concerned."""

    __tablename__ = "mm_contact"

    contact_id: str = Field(primary_key=True, max_length=100)
    email: str | None = Field(default=None, index=True, max_length=320)
    first_name: str | None = Field(default=None, max_length=500)
    last_name: str | None = Field(default=None, max_length=500)
    language: str | None = Field(default=None, max_length=35)
    custom_fields: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    email_opt_out: bool = False
    unsubscribed: bool = False
    bounced: bool = False
    complained: bool = False
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class OutboundMessage(SQLModel, table=True):
    """One transactional email, keyed by the caller's correlation id (idempotency)."""

    __tablename__ = "mm_outbound_message"

    id: int | None = Field(default=None, primary_key=True)
    correlation_id: str = Field(unique=True, index=True, max_length=200)
    status: str = Field(default="queued", max_length=20)
    recipients: str = Field(max_length=20_000)
    subject: str = Field(default="", max_length=2_000)
    message_id_header: str | None = Field(default=None, max_length=998)
    attempts: int = 0
    smtp_code: int | None = None
    last_error: str | None = Field(default=None, max_length=2_000)
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


TABLES = (Contact.__table__, OutboundMessage.__table__)
