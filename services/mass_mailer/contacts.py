"""Pure rules for applying CRM contact messages to our copy of a contact."""

from __future__ import annotations

from typing import Any

from services.mass_mailer.models import Contact
from shared.contracts import ContactOptedOut, ContactUpserted
from shared.timeutil import as_utc


def apply_contact_message(
    current: Contact | None, message: ContactUpserted | ContactOptedOut
) -> Contact | None:
    """The contact after ``message``, or None when the message changes nothing.

    Messages older than the stored state are ignored (the CRM may replay). Our own suppression flags
    (unsubscribed via link, bounced, complained) are never cleared by a CRM upsert.
    """
    if current is not None and as_utc(message.occurred_at) < as_utc(current.updated_at):
        return None
    contact = current or Contact(contact_id=message.contact_id, created_at=message.occurred_at)
    if isinstance(message, ContactOptedOut):
        contact.email_opt_out = True
    else:
        contact.email = message.email.lower() if message.email else None
        contact.first_name = message.first_name
        contact.last_name = message.last_name
        contact.language = message.language
        contact.custom_fields = dict(message.custom_fields)
        contact.email_opt_out = message.email_opt_out
    contact.updated_at = message.occurred_at
    return contact


SUPPRESSION_FLAGS = ("unsubscribed", "bounced", "complained", "email_opt_out")


def is_suppressed(contact: Any) -> str | None:
    """Why mail to this contact (a Contact, or a row with its flag columns) must not go out, or
    None."""
    if contact is None:
        return None
    for flag in SUPPRESSION_FLAGS:
        if getattr(contact, flag):
            return flag
    return None
