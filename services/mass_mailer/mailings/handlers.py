"""Kafka consumers and background tasks of the mailing engine."""

from __future__ import annotations

from typing import Any

from aiokafka.abc import ConsumerRebalanceListener

from services.mass_mailer.mailings import store
from services.mass_mailer.mailings.ratelimit import RateLimiter
from services.mass_mailer.mailings.scheduler import Scheduler
from services.mass_mailer.mailings.sender import BulkSender
from shared.consumer import subscribe
from shared.contracts import BulkBatch, DeliveryEvent
from shared.db import in_transaction
from shared.service import ServiceContext
from shared.topics import MAIL_DELIVERY_EVENTS, MAIL_OUTBOUND_BULK

BATCHES_AT_ONCE = 4


class RateShare(ConsumerRebalanceListener):  # type: ignore[misc]
    """Relay and domain rate limits hold for the service, not per process: batches are spread
    evenly over the bulk topic's partitions (store.batch_key), so a sender consuming k of n
    partitions keeps to k/n of each limit."""

    def __init__(self, limiter: RateLimiter, partitions: int) -> None:
        self.limiter = limiter
        self.partitions = partitions

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        mine = min(max(len(assigned), 1), self.partitions)  # none: it sends nothing anyway
        self.limiter.set_share(mine / self.partitions)


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
        listener=RateShare(sender.limiter, context.settings.kafka_partitions),
    )
    subscribe(
        context.broker, context.settings, MAIL_DELIVERY_EVENTS, DeliveryEvent, on_delivery_event, group=group
    )
    context.background.extend(
        [scheduler.run_forever, sender.renew_leases_forever, sender.persist_rates_forever]
    )
    context.on_shutdown.append(sender.close)
