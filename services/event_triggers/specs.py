"""Request and response bodies of the HTTP API (validated; unknown fields are rejected)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Action = Literal["registration", "cancellation", "waitlist", "before_start", "after_end", "certificate"]


class TriggerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    active: bool = True
    sub_event: Annotated[str, Field(max_length=500)] | None = Field(
        None, description="only registrants of this sub-event (default: all)"
    )
    template_id: int = Field(description="a template of the mass mailer; must exist and be active")
    recipients: Literal["participants", "staff", "both"] = "participants"
    functions: list[Annotated[str, Field(max_length=500)]] = Field(
        default_factory=list, max_length=50, description="only registrants with one of these functions"
    )
    action: Action
    offset_value: int = Field(0, ge=0, le=100_000, description="N for scheduled actions")
    offset_unit: Literal["minutes", "hours", "days"] = "days"
    local_time: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] | None = Field(
        None, description="HH:MM in the event's time zone (scheduled actions)"
    )
    certificate_template: Annotated[str, Field(max_length=20_000)] | None = Field(
        None, description="document template with merge tags (certificate action)"
    )
    sender_identity: Annotated[str, Field(max_length=200)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TriggerSpec:
        if self.action == "certificate" and not self.certificate_template:
            raise ValueError("a certificate trigger needs certificate_template")
        if self.action in ("registration", "cancellation", "waitlist") and self.local_time:
            raise ValueError("local_time only applies to scheduled actions")
        return self


class TriggerOut(TriggerSpec):
    id: int
    event_id: str
    created_at: datetime
    updated_at: datetime


class SendOut(BaseModel):
    id: int
    registration_id: str
    due_at: datetime
    status: str
    reason: str | None
    correlation_id: str
    sent_at: datetime | None


class GdprSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delete_after_days: int = Field(ge=0, le=36_500, description="delete form answers N days after the end")


class GdprState(BaseModel):
    delete_after_days: int | None
    deletion_at: datetime | None
    cancelled: bool
    done_at: datetime | None


class MassEventOut(BaseModel):
    event_id: str
    event_number: str
    name: str
    start: datetime
    end: datetime
    time_zone: str
    location: str | None
    sub_events: list[str]
    cancelled: bool
    sequence: int
    gdpr: GdprState
    calendar_link: str


class RegistrationOut(BaseModel):
    registration_id: str
    event_id: str
    contact_id: str
    email: str | None
    role: str
    function: str | None
    sub_event: str | None
    status: str
    answered: bool
    form_answers: dict[str, Any]
    answers_deleted_at: datetime | None
    gdpr_deletion_at: datetime | None
