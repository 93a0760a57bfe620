"""Kafka consumers of the event triggers service."""

from __future__ import annotations

from services.event_triggers import storage
from shared.consumer import subscribe
from shared.contracts import DeliveryEvent, MassEventChanged
from shared.db import in_transaction
from shared.service import ServiceContext
from shared.topics import CRM_MASS_EVENTS, MAIL_DELIVERY_EVENTS

# Correlation ids of mail this service requests start with this, so it keeps only its own results.
CORRELATION_PREFIX = "et:"


def register_consumers(context: ServiceContext) -> None:
    group = context.settings.group(context.name)

    async def on_mass_event(message: MassEventChanged) -> None:
        await in_transaction(context.database_url, storage.save_mass_event, message)

    async def on_delivery_event(message: DeliveryEvent) -> None:
        if message.correlation_id.startswith(CORRELATION_PREFIX):
            await in_transaction(context.database_url, storage.save_delivery_event, message)

    subscribe(context.broker, context.settings, CRM_MASS_EVENTS, MassEventChanged, on_mass_event, group=group)
    subscribe(
        context.broker, context.settings, MAIL_DELIVERY_EVENTS, DeliveryEvent, on_delivery_event, group=group
    )
