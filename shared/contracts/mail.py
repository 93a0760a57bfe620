"""Outbound mail requests and per-recipient delivery events."""

from __future__ import annotations

import base64
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.contracts.base import EmailAddress, Message

HeaderText = Annotated[str, Field(max_length=2_000)]
MessageIdText = Annotated[str, Field(pattern=r"^<[\x21-\x3b\x3d\x3f-\x7e]{1,900}>$")]
MAX_RECIPIENTS = 100


class Attachment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: Annotated[str, Field(min_length=1, max_length=255)]
    content_type: Annotated[str, Field(pattern=r"^[\w.+-]+/[\w.+-]+$")] = "application/octet-stream"
    content_b64: Annotated[str, Field(max_length=7_000_000)]
    inline_cid: Annotated[str, Field(max_length=255)] | None = None

    @field_validator("content_b64")
    @classmethod
    def _is_base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except ValueError as exc:
            raise ValueError("content_b64 is not valid base64") from exc
        return value


class OutboundEmail(Message):
    """One email to send through the gateway (topic mail.outbound.transactional)."""

    correlation_id: Annotated[str, Field(min_length=1, max_length=200)]
    sender_identity: Annotated[str, Field(max_length=200)] | None = None
    to: Annotated[list[EmailAddress], Field(min_length=1, max_length=MAX_RECIPIENTS)]
    cc: Annotated[list[EmailAddress], Field(max_length=MAX_RECIPIENTS)] = Field(default_factory=list)
    reply_to: EmailAddress | None = None
    message_id_header: MessageIdText | None = Field(
        None, description="Message-ID header to use (e.g. a signed ticket reply id); default: one of ours"
    )
    in_reply_to: MessageIdText | None = None
    references: Annotated[list[MessageIdText], Field(max_length=100)] = Field(default_factory=list)
    subject: HeaderText = ""
    text: str | None = None
    html: str | None = None
    template_id: Annotated[str, Field(max_length=200)] | None = None
    merge_data: dict[str, Any] = Field(default_factory=dict)
    headers: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,76}$")], HeaderText] = Field(
        default_factory=dict
    )
    attachments: list[Attachment] = Field(default_factory=list, max_length=50)
    source: Annotated[str, Field(max_length=100)] = "api"

    @model_validator(mode="after")
    def _has_body(self) -> OutboundEmail:
        if self.text is None and self.html is None and self.template_id is None:
            raise ValueError("one of text, html or template_id is required")
        return self


class BulkRecipient(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delivery_id: int
    contact_id: str
    email: EmailAddress


class BulkBatch(Message):
    """A slice of a mailing's recipients (topic mail.outbound.bulk)."""

    mailing_id: int
    template_version_id: int
    recipients: Annotated[list[BulkRecipient], Field(min_length=1, max_length=5_000)]


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    OPENED = "opened"
    UNSUBSCRIBED = "unsubscribed"


class DeliveryEvent(Message):
    """A per-recipient status change (topic mail.delivery-events)."""

    correlation_id: Annotated[str, Field(max_length=200)]
    recipient: EmailAddress
    status: DeliveryStatus
    source: Annotated[str, Field(max_length=100)] = "gateway"
    smtp_code: int | None = None
    enhanced_code: Annotated[str, Field(max_length=20)] | None = None
    reason: Annotated[str, Field(max_length=2_000)] | None = None
    message_id_header: Annotated[str, Field(max_length=998)] | None = None
    attempt: int = 1
