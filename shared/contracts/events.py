"""Messages the CRM publishes about mass events and their registrations."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from shared.contracts.base import CrmId, Message, ShortText


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
