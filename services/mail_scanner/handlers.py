"""Kafka consumers and background tasks of the mail scanner."""

from __future__ import annotations

from services.mail_scanner import storage
from services.mail_scanner.runtime import scanner_for
from shared.consumer import subscribe
from shared.contracts import ContactMessage
from shared.contracts.contacts import ContactErased, ContactOptedOut, ContactUpserted
from shared.db import in_transaction
from shared.service import ServiceContext
from shared.topics import CRM_CONTACTS


def register_consumers(context: ServiceContext) -> None:
    async def on_contact(message: ContactUpserted | ContactOptedOut | ContactErased) -> None:
        await in_transaction(context.database_url, storage.save_requester, message)

    subscribe(
        context.broker,
        context.settings,
        CRM_CONTACTS,
        ContactMessage,
        on_contact,
        group=context.settings.group(context.name),
    )
    background_tasks(context)


def background_tasks(context: ServiceContext) -> None:
    """The IMAP scanner: leases active accounts and imports their mail."""
    scanner = scanner_for(context)

    async def mail_scanner() -> None:
        await scanner.run_forever()

    context.background.append(mail_scanner)
