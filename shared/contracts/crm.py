"""Messages the CRM publishes: contacts, target-group membership, mass events, registrations."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from shared.contracts.base import MAX_TEXT, EmailAddress, Message

ShortText = Annotated[str, Field(max_length=500)]
CrmId = Annotated[str, Field(min_length=1, max_length=100)]


class ContactUpserted(Message):
    kind: Literal["contact.upserted"] = "contact.upserted"
    contact_id: CrmId
    email: EmailAddress | None = None
    first_name: ShortText | None = None
    last_name: ShortText | None = None
    language: Annotated[str, Field(max_length=35)] | None = None
    custom_fields: dict[str, Any] = Field(default_factory=dict)
    email_opt_out: bool = False


class ContactOptedOut(Message):
    kind: Literal["contact.opted_out"] = "contact.opted_out"
    contact_id: CrmId
    reason: Annotated[str, Field(max_length=MAX_TEXT)] | None = None


ContactMessage = Annotated[ContactUpserted | ContactOptedOut, Field(discriminator="kind")]


class TargetGroupMembership(Message):
    kind: Literal["target_group.member_added", "target_group.member_removed"]
    target_group_id: CrmId
    contact_id: CrmId


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
