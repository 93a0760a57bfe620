"""Tables owned by the mass mailer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Text, UniqueConstraint
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
    """One transactional email, keyed by the caller's correlation id (idempotency).

    Status: queued -> sending -> handed_over -> sent | deferred (-> sending ...) | failed.
    ``handed_over`` means the final dot went to the relay; after a crash such a message is
    taken as sent rather than sent twice. A lease (owner, until) marks who is working on a row.
    """

    __tablename__ = "mm_outbound_message"

    id: int | None = Field(default=None, primary_key=True)
    correlation_id: str = Field(unique=True, index=True, max_length=200)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="queued", index=True, max_length=20)
    recipients: str = Field(max_length=20_000)
    subject: str = Field(default="", max_length=2_000)
    message_id_header: str | None = Field(default=None, max_length=998)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=_now, index=True)
    deadline_at: datetime
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = None
    events_pending: bool = False
    recipient_status: dict[str, list[str]] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )  # {address: [status, reason]}: what the next delivery events say
    smtp_code: int | None = None
    enhanced_code: str | None = Field(default=None, max_length=20)
    last_error: str | None = Field(default=None, max_length=2_000)
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class SenderIdentity(SQLModel, table=True):
    """A From address with its relay and DKIM domain (the CRM's "email addresses")."""

    __tablename__ = "mm_sender_identity"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=200)
    email: str = Field(max_length=320)
    display_name: str = Field(default="", max_length=200)
    reply_to: str | None = Field(default=None, max_length=320)
    is_default: bool = False
    relay_host: str = Field(max_length=255)
    relay_port: int = 587
    relay_tls: str = Field(default="starttls", max_length=10)
    relay_verify_tls: bool = True
    relay_auth: str = Field(default="none", max_length=10)
    relay_username: str | None = Field(default=None, max_length=320)
    relay_secret: str | None = Field(default=None, max_length=4_000, description="encrypted")
    pool_size: int = 8
    dkim_domain: str | None = Field(default=None, max_length=253)
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class DkimKeyRecord(SQLModel, table=True):
    """A DKIM private key (encrypted with the master key) for one domain and selector."""

    __tablename__ = "mm_dkim_key"
    __table_args__ = (UniqueConstraint("domain", "selector", name="uq_mm_dkim_key_domain_selector"),)

    id: int | None = Field(default=None, primary_key=True)
    domain: str = Field(index=True, max_length=253)
    selector: str = Field(max_length=63)
    algorithm: str = Field(max_length=10)
    private_key: str = Field(sa_column=Column(Text, nullable=False))
    active: bool = True
    created_at: datetime = Field(default_factory=_now)


class Suppression(SQLModel, table=True):
    """Addresses that must not receive mail: bounced, complained, unsubscribed, manual."""

    __tablename__ = "mm_suppression"

    email: str = Field(primary_key=True, max_length=320)
    reason: str = Field(max_length=20)
    detail: str | None = Field(default=None, max_length=2_000)
    created_at: datetime = Field(default_factory=_now)
