"""Tables owned by the mail scanner."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


class Requester(SQLModel, table=True):
    """Contacts known to the CRM, so tickets can be linked to the requester's contact."""

    __tablename__ = "ms_requester"

    contact_id: str = Field(primary_key=True, max_length=100)
    email: str | None = Field(default=None, index=True, max_length=320)
    name: str = Field(default="", max_length=1_001)
    updated_at: datetime = Field(default_factory=_now)


class ScannerAccount(SQLModel, table=True):
    """An IMAP inbox the scanner watches. Secrets are Fernet tokens (shared.secretbox)."""

    __tablename__ = "ms_account"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    active: bool = False
    host: str = Field(max_length=255)
    port: int = 993
    encryption: str = Field(default="ssl", max_length=10)  # ssl | starttls | none
    verify_tls: bool = True
    auth_type: str = Field(default="password", max_length=10)  # password | oauth2
    username: str = Field(max_length=320)
    password_enc: str | None = Field(default=None, max_length=4_000)
    oauth_token_url: str | None = Field(default=None, max_length=2_000)
    oauth_client_id: str | None = Field(default=None, max_length=500)
    oauth_client_secret_enc: str | None = Field(default=None, max_length=4_000)
    oauth_refresh_token_enc: str | None = Field(default=None, max_length=8_000)
    oauth_scope: str | None = Field(default=None, max_length=1_000)
    folders: list[str] = Field(default_factory=lambda: ["INBOX"], sa_column=Column(JSON, nullable=False))
    scan_mode: str = Field(default="unread", max_length=10)  # unread | since_last
    error_folder: str = Field(default="mailsvc-errors", max_length=200)
    state: str = Field(default="inactive", max_length=20)  # inactive | starting | idle | polling | error
    last_error: str | None = Field(default=None, max_length=2_000)
    last_scan_at: datetime | None = None
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = None
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class FolderCheckpoint(SQLModel, table=True):
    """Highest UID imported per (account, folder, UIDVALIDITY); written with the ticket change."""

    __tablename__ = "ms_checkpoint"

    account_id: int = Field(primary_key=True)
    folder: str = Field(primary_key=True, max_length=200)
    uidvalidity: int = Field(primary_key=True, sa_type=BigInteger)
    last_uid: int = Field(default=0, sa_type=BigInteger)
    updated_at: datetime = Field(default_factory=_now)


class ImportedMail(SQLModel, table=True):
    """Fingerprint (Message-ID + Date + size) of every mail handled, for the UIDVALIDITY resync."""

    __tablename__ = "ms_imported"
    __table_args__ = (UniqueConstraint("account_id", "fingerprint", name="uq_ms_imported_fp"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: int
    fingerprint: str = Field(max_length=64)
    outcome: str = Field(max_length=30)
    ticket_id: int | None = None
    comment_id: int | None = None
    created_at: datetime = Field(default_factory=_now)


class PendingAction(SQLModel, table=True):
    """Mailbox changes (\\Seen, move, delete) decided in an import transaction, done after it."""

    __tablename__ = "ms_pending_action"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(index=True)
    folder: str = Field(max_length=200)
    uidvalidity: int = Field(sa_type=BigInteger)
    uid: int = Field(sa_type=BigInteger)
    action: str = Field(max_length=10)  # seen | move | delete
    target: str | None = Field(default=None, max_length=200)


class ErrorMail(SQLModel, table=True):
    """A mail moved to the error folder, with the reason."""

    __tablename__ = "ms_error_mail"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(index=True)
    folder: str = Field(max_length=200)
    uid: int = Field(sa_type=BigInteger)
    moved_to: str = Field(max_length=200)
    reason: str = Field(max_length=2_000)
    size: int = 0
    message_id: str | None = Field(default=None, max_length=998)
    subject: str = Field(default="", max_length=2_000)
    raw_sha256: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=_now)


class Blob(SQLModel, table=True):
    """Content-addressed bytes (attachments, raw mails)."""

    __tablename__ = "ms_blob"

    sha256: str = Field(primary_key=True, max_length=64)
    size: int
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Ticket(SQLModel, table=True):
    __tablename__ = "ms_ticket"

    id: int | None = Field(default=None, primary_key=True)
    number: str | None = Field(default=None, max_length=50, unique=True)
    account_id: int | None = Field(default=None, index=True)
    subject: str = Field(default="", max_length=2_000)
    status: str = Field(default="open", max_length=30)
    priority: str | None = Field(default=None, max_length=50)
    category: str | None = Field(default=None, max_length=200)
    assigned_group: str | None = Field(default=None, max_length=200)
    requester_email: str = Field(max_length=320, index=True)
    requester_name: str = Field(default="", max_length=500)
    requester_contact_id: str | None = Field(default=None, max_length=100)
    cc: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    note: str | None = Field(default=None, max_length=2_000)
    last_message_id: str | None = Field(default=None, max_length=998)
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class TicketComment(SQLModel, table=True):
    __tablename__ = "ms_comment"

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(index=True)
    direction: str = Field(default="in", max_length=3)  # in | out
    author_email: str = Field(max_length=320)
    author_name: str = Field(default="", max_length=500)
    message_id: str | None = Field(default=None, max_length=998)
    # SHA-256 of an incoming mail's Message-ID (threads.message_key): follow-ups that name it
    # in In-Reply-To/References find this ticket through the index.
    message_key: str | None = Field(default=None, max_length=64, index=True)
    subject: str = Field(default="", max_length=2_000)
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    reply_text: str = Field(default="", sa_column=Column(Text, nullable=False))
    html: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    attachments: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    cc: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    raw_sha256: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=_now)


class ScannerRule(SQLModel, table=True):
    __tablename__ = "ms_rule"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(index=True)
    position: int = 0
    name: str = Field(max_length=200)
    enabled: bool = True
    match: str = Field(default="all", max_length=3)  # all | any
    conditions: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    actions: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class AutoAck(SQLModel, table=True):
    """When a requester last got an auto-acknowledgement (rate limit per address)."""

    __tablename__ = "ms_autoack"

    email: str = Field(primary_key=True, max_length=320)
    last_sent_at: datetime


class ScannerSecret(SQLModel, table=True):
    """Service-wide secrets generated on first use (the Message-ID signing key), encrypted."""

    __tablename__ = "ms_secret"

    name: str = Field(primary_key=True, max_length=100)
    value_enc: str = Field(max_length=4_000)
