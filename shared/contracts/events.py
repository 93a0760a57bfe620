"""Messages the CRM publishes about mass events and their registrations."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.base import CrmId, EmailAddress, Message, ShortText


class MassEventChanged(Message):
    kind: Literal["mass_event.created", "mass_event.updated", "mass_event.cancelled"]
    event_id: CrmId
    event_number: ShortText
    name: ShortText
    start: datetime
    end: datetime
    time_zone: Annotated[str, Field(max_length=64)] = "UTC"
    location: ShortText | None = None
    registration_start: datetime | None = None
    registration_end: datetime | None = None
    sub_events: list[ShortText] = Field(default_factory=list, max_length=500)


class RegistrationContact(BaseModel):
    """A snapshot of the registrant's contact data, for merge tags and the recipient address."""

    model_config = ConfigDict(extra="forbid")

    email: EmailAddress | None = None
    first_name: ShortText | None = None
    last_name: ShortText | None = None
    salutation: ShortText | None = None
    title: ShortText | None = None
    company: ShortText | None = None
    language: Annotated[str, Field(max_length=35)] | None = None


class RegistrationChanged(Message):
    kind: Literal[
        "registration.created",
        "registration.cancelled",
        "registration.waitlisted",
        "registration.moved_from_waitlist",
        "registration.attended",
    ]
    registration_id: CrmId
    event_id: CrmId
    contact_id: CrmId
    role: Literal["participant", "staff"] = "participant"
    sub_event: ShortText | None = None
    form_answers: dict[str, Any] = Field(default_factory=dict)
    # Optional since v1 (added for event triggers): recipient data and a finer staff role.
    contact: RegistrationContact | None = None
    function: ShortText | None = Field(None, description="e.g. speaker, host, usher (finer than role)")


class FormAnswersDeleted(Message):
    """GDPR: a registration's form answers were deleted (topic events.gdpr-deletions).

    ``message_id`` is deterministic per registration, so a repeated publish is recognisable.
    """

    kind: Literal["registration.form_answers_deleted"] = "registration.form_answers_deleted"
    registration_id: CrmId
    event_id: CrmId
    contact_id: CrmId
    reason: Literal["automatic", "manual"]
    deleted_at: datetime
