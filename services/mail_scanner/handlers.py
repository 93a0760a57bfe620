"""Kafka consumers of the mail scanner."""

from __future__ import annotations

from services.mail_scanner import storage
from shared.consumer import subscribe
from shared.contracts import ContactMessage
from shared.contracts.contacts import ContactOptedOut, ContactUpserted
from shared.db import in_transaction
from shared.service import ServiceContext
from shared.topics import CRM_CONTACTS


def register_consumers(context: ServiceContext) -> None:
    async def on_contact(message: ContactUpserted | ContactOptedOut) -> None:
        await in_transaction(context.database_url, storage.save_requester, message)

    subscribe(
        context.broker,
        context.settings,
        CRM_CONTACTS,
        ContactMessage,
        on_contact,
        group=context.settings.group(context.name),
    )
