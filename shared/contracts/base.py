"""The envelope every message shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID, uuid4

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_TEXT = 10_000  # generous cap for free-text fields arriving from outside
ShortText = Annotated[str, Field(max_length=500)]
CrmId = Annotated[str, Field(min_length=1, max_length=100)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """Base of all contracts: strict about unknown fields, so typos fail loudly."""

    model_config = ConfigDict(extra="forbid", str_max_length=1_000_000)

    schema_version: Literal[1] = 1
    message_id: UUID = Field(default_factory=uuid4)
    occurred_at: datetime = Field(default_factory=utcnow)


def _valid_address(value: str) -> str:
    """RFC 5321/5322 address check (email-validator, no DNS); RFC 2606 ``.test`` domains pass."""
    try:
        result = validate_email(value, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from exc
    return result.normalized


EmailAddress = Annotated[str, Field(max_length=320), AfterValidator(_valid_address)]
