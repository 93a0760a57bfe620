"""Tables owned by the mail scanner."""

from __future__ import annotations

from datetime import UTC, datetime

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
