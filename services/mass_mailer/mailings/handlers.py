"""Kafka consumers and background tasks of the mailing engine."""

from __future__ import annotations

from services.mass_mailer.mailings import store
from services.mass_mailer.mailings.scheduler import Scheduler
from services.mass_mailer.mailings.sender import BulkSender
from shared.consumer import subscribe
from shared.contracts import BulkBatch, DeliveryEvent
from shared.db import in_transaction
from shared.service import ServiceContext
from shared.topics import MAIL_DELIVERY_EVENTS, MAIL_OUTBOUND_BULK

BATCHES_AT_ONCE = 4


def register_consumers(context: ServiceContext) -> None:
    """Bulk senders (mail.outbound.bulk), bounce/complaint events, the scheduler loop."""
    group = context.settings.group(context.name)
    sender = BulkSender(context.database_url, context.settings)
    scheduler = Scheduler(context)

    async def on_bulk_batch(batch: BulkBatch) -> None:
        await sender.handle(batch)

    async def on_delivery_event(event: DeliveryEvent) -> None:
        await in_transaction(context.database_url, store.apply_delivery_event, event)

    subscribe(
        context.broker,
        context.settings,
        MAIL_OUTBOUND_BULK,
        BulkBatch,
        on_bulk_batch,
        group=group,
        batch_size=BATCHES_AT_ONCE,
        concurrency=BATCHES_AT_ONCE,
    )
    subscribe(
        context.broker, context.settings, MAIL_DELIVERY_EVENTS, DeliveryEvent, on_delivery_event, group=group
    )
    context.background.extend(
        [scheduler.run_forever, sender.renew_leases_forever, sender.persist_rates_forever]
    )
    context.on_shutdown.append(sender.close)
