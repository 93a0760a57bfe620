"""Kafka consumers of the event triggers service."""

from __future__ import annotations

from services.event_triggers import storage
from services.event_triggers.dispatcher import Dispatcher
from services.event_triggers.rules import CORRELATION_PREFIX
from shared.consumer import subscribe
from shared.contracts import DeliveryEvent, MassEventChanged, RegistrationChanged, TemplateChanged
from shared.db import in_transaction
from shared.group_commit import GroupCommit
from shared.service import ServiceContext
from shared.topics import CRM_MASS_EVENTS, CRM_REGISTRATIONS, MAIL_DELIVERY_EVENTS, MAIL_TEMPLATES

__all__ = ["CORRELATION_PREFIX", "register_consumers"]
REGISTRATION_BATCH = 200
REGISTRATION_CONCURRENCY = 32
# The broker answers a fetch once this many bytes are there or the wait is over: fewer, fuller
# batches (each batch costs a consumer pass and a transaction) for a little latency. Delivery
# results are not on anyone's critical path, so they wait longer.
REGISTRATION_FETCH = {"fetch_min_bytes": 8_192, "fetch_max_wait_ms": 40}
DELIVERY_FETCH = {"fetch_min_bytes": 65_536, "fetch_max_wait_ms": 250}


def register_consumers(context: ServiceContext, dispatcher: Dispatcher) -> None:
    group = context.settings.group(context.name)
    url = context.database_url

    async def on_mass_event(message: MassEventChanged) -> None:
        if await in_transaction(url, storage.save_mass_event, message):
            dispatcher.wake()  # a move can make sends due at once

    registrations: GroupCommit[RegistrationChanged, bool] = GroupCommit(
        url, lambda session, message: storage.apply_registration(session, message, dispatcher.clock.now())
    )

    async def on_registration(message: RegistrationChanged) -> None:
        if await registrations.submit(message):
            dispatcher.wake()

    async def on_template(message: TemplateChanged) -> None:
        await in_transaction(url, storage.save_template, message)

    deliveries: GroupCommit[DeliveryEvent, bool] = GroupCommit(url, storage.save_delivery_event)

    async def on_delivery_event(message: DeliveryEvent) -> None:
        if message.correlation_id.startswith(CORRELATION_PREFIX):
            await deliveries.submit(message)

    settings, broker = context.settings, context.broker
    subscribe(broker, settings, CRM_MASS_EVENTS, MassEventChanged, on_mass_event, group=group)
    # Batches save a Kafka commit per message; records of a batch reach the group commit in
    # order (they start in order and nothing awaits before they queue), so order is kept.
    subscribe(
        broker, settings, CRM_REGISTRATIONS, RegistrationChanged, on_registration,
        group=group, batch_size=REGISTRATION_BATCH, concurrency=REGISTRATION_CONCURRENCY,
        **REGISTRATION_FETCH,
    )  # fmt: skip
    subscribe(broker, settings, MAIL_TEMPLATES, TemplateChanged, on_template, group=group)
    subscribe(
        broker, settings, MAIL_DELIVERY_EVENTS, DeliveryEvent, on_delivery_event,
        group=group, batch_size=REGISTRATION_BATCH, concurrency=REGISTRATION_CONCURRENCY,
        **DELIVERY_FETCH,
    )  # fmt: skip
