"""The scheduler loop: starts due mailings, freezes membership and publishes batches, requeues
after a resume, retries deferred deliveries, recovers those of crashed senders, completes mailings.

Safe with several instances: starting is a conditional UPDATE on the status, planning a mailing
takes a lease on it, and the sweep requeues each row with a conditional UPDATE.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from services.mass_mailer.mailings import store
from services.mass_mailer.mailings.models import Mailing
from shared.db import in_transaction
from shared.service import ServiceContext

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.url = context.database_url
        self.settings = context.settings
        self.token = f"{socket.gethostname()[:30]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.batching = store.Batching(self.settings.mailing_batch_size, self.settings.kafka_partitions)

    async def tick(self) -> None:
        await in_transaction(self.url, store.start_due)
        lease = max(self.settings.mailing_lease_s, 10.0)
        for mailing_id in await in_transaction(self.url, store.plannable):
            if not await in_transaction(self.url, store.claim_plan, mailing_id, self.token, lease):
                continue
            try:
                await self.plan(mailing_id)
            except store.LeaseLost:
                log.warning("mailing %s: planning lease lost to another instance", mailing_id)
            finally:
                await in_transaction(self.url, store.release_plan, mailing_id, self.token)
        if await in_transaction(self.url, store.sweep, self.batching):
            self.context.outbox.wake()
        for mailing_id in await in_transaction(self.url, store.complete_finished):
            log.info("mailing %s completed", mailing_id)

    async def plan(self, mailing_id: int) -> None:
        lease = max(self.settings.mailing_lease_s, 10.0)
        while True:
            mailing = await in_transaction(self.url, lambda s: s.get(Mailing, mailing_id))
            if mailing is None or mailing.status != "sending":
                return
            if not mailing.frozen:
                await in_transaction(self.url, store.freeze_page, mailing_id, self.token, self.batching)
            elif mailing.requeue_cursor is not None:
                await in_transaction(self.url, store.requeue_page, mailing_id, self.token, self.batching)
            else:
                return
            self.context.outbox.wake()
            await in_transaction(self.url, store.claim_plan, mailing_id, self.token, lease)

    async def run_forever(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("mailing scheduler pass failed; will retry")
            await asyncio.sleep(self.settings.mailing_scheduler_interval_s)
