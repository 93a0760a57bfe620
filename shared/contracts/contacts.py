"""Messages the CRM publishes about contacts and target-group membership."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from shared.contracts.base import MAX_TEXT, CrmId, EmailAddress, Message, ShortText


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


class ContactErased(Message):
    """GDPR erase request: remove the contact's personal data (statistics stay, anonymised)."""

    kind: Literal["contact.erased"] = "contact.erased"
    contact_id: CrmId


ContactMessage = Annotated[ContactUpserted | ContactOptedOut | ContactErased, Field(discriminator="kind")]


class TargetGroupMembership(Message):
    kind: Literal["target_group.member_added", "target_group.member_removed"]
    target_group_id: CrmId
    contact_id: CrmId
