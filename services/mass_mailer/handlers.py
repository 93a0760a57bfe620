"""Kafka consumers of the mass mailer."""

from __future__ import annotations

from services.mass_mailer import storage
from services.mass_mailer.audience import handlers as audience_handlers
from services.mass_mailer.gateway import Gateway
from services.mass_mailer.mailings import engine
from shared.consumer import subscribe
from shared.contracts import ContactMessage
from shared.contracts.contacts import ContactErased, ContactOptedOut, ContactUpserted
from shared.contracts.mail import OutboundEmail
from shared.db import in_transaction
from shared.service import ServiceContext
from shared.topics import CRM_CONTACTS, MAIL_OUTBOUND_TRANSACTIONAL


def register_consumers(context: ServiceContext) -> None:
    group = context.settings.group(context.name)
    gateway = Gateway(context)

    async def on_contact(message: ContactUpserted | ContactOptedOut | ContactErased) -> None:
        if isinstance(message, ContactErased):
            await audience_handlers.erase_contact(context, message)
            return
        await in_transaction(context.database_url, storage.save_contact_message, message)

    async def on_outbound(message: OutboundEmail) -> None:
        await gateway.handle(message)

    subscribe(context.broker, context.settings, CRM_CONTACTS, ContactMessage, on_contact, group=group)
    subscribe(
        context.broker,
        context.settings,
        MAIL_OUTBOUND_TRANSACTIONAL,
        OutboundEmail,
        on_outbound,
        group=group,
        batch_size=context.settings.gateway_concurrency * 4,
        concurrency=context.settings.gateway_concurrency,
    )
    context.background.append(gateway.sweep_forever)
    context.on_shutdown.append(gateway.close)
    engine.register_consumers(context)
