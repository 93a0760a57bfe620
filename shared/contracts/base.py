"""The envelope every message shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field

MAX_TEXT = 10_000  # generous cap for free-text fields arriving from outside


def utcnow() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """Base of all contracts: strict about unknown fields, so typos fail loudly."""

    model_config = ConfigDict(extra="forbid", str_max_length=1_000_000)

    schema_version: Literal[1] = 1
    message_id: UUID = Field(default_factory=uuid4)
    occurred_at: datetime = Field(default_factory=utcnow)
