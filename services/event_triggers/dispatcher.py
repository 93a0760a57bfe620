"""The scheduler loop: fires due sends and GDPR deletions from the database, never from memory.

Each pass leases a batch of due sends (conditional UPDATE: several instances never take the
same row), builds the mails, publishes them to mail.outbound.transactional and marks them sent.
A crash between publishing and marking leaves the lease to expire; the next owner publishes
again with the same correlation id, and the gateway sends each correlation id at most once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from services.event_triggers import storage
from services.event_triggers.certificate import CertificateError
from services.event_triggers.clock import Clock
from services.event_triggers.ics import calendar_link
from services.event_triggers.messages import build_request
from shared.db import in_transaction
from shared.service import ServiceContext
from shared.topics import MAIL_OUTBOUND_TRANSACTIONAL

log = logging.getLogger(__name__)
T = TypeVar("T")
# After a wake-up, wait this long before claiming: registrations arrive one by one, and a pass
# (claim, build, publish, mark) costs about the same for one send as for a dozen.
COALESCE_S = 0.03
JSON = {"content-type": "application/json"}


class Dispatcher:
    def __init__(self, context: ServiceContext, clock: Clock) -> None:
        self.context = context
        self.settings = context.settings
        self.clock = clock
        self.owner = f"{socket.gethostname()[:20]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.outbound = context.broker.publisher(
            context.settings.topic(MAIL_OUTBOUND_TRANSACTIONAL), title="trigger mails"
        )
        self._wake = asyncio.Event()
        self._secret: bytes | None = None

    def wake(self) -> None:
        self._wake.set()

    async def db(self, work: Callable[..., T], *args: object, **kwargs: object) -> T:
        return await in_transaction(self.context.database_url, work, *args, **kwargs)

    async def link_secret(self) -> bytes:
        if self._secret is None:
            configured = self.settings.event_triggers_link_secret
            value = configured.get_secret_value() if configured else await self.db(storage.link_secret)
            self._secret = value.encode()
        return self._secret

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_gdpr()
                while await self.dispatch_once() >= self.settings.event_triggers_batch_size:
                    pass
            except Exception:
                log.exception("event triggers scheduler pass failed; will retry")
            try:
                await asyncio.wait_for(
                    self._wake.wait(), timeout=self.settings.event_triggers_scheduler_interval_s
                )
                await asyncio.sleep(COALESCE_S)
            except TimeoutError:
                pass
            self._wake.clear()

    async def dispatch_once(self) -> int:
        """Lease, build, publish and settle one batch of due sends; returns how many were due."""
        token = f"{self.owner}:{uuid.uuid4().hex[:8]}"
        now = self.clock.now()
        jobs = await self.db(
            storage.claim_due,
            token,
            now,
            self.settings.event_triggers_batch_size,
            self.settings.event_triggers_lease_s,
        )
        if not jobs:
            return 0
        secret = await self.link_secret()
        built, broken = await asyncio.to_thread(self._build_all, jobs, secret, now)
        for send_id, reason in broken:
            log.warning("send %s cannot be built: %s", send_id, reason)
            await self.db(storage.mark_failed, send_id, token, reason)
        published: list[int] = []
        try:
            pending = []
            for send_id, payload, key in built:
                publishing = await self.outbound.publish(payload, key=key, headers=JSON, no_confirm=True)
                pending.append((send_id, publishing))
            for send_id, future in pending:
                await future
                published.append(send_id)
        finally:
            if published:
                await self.db(storage.mark_sent, published, token)
            done = set(published)
            unpublished = [i for i, _, _ in built if i not in done]
            if unpublished:
                await self.db(storage.release, unpublished, token)
        return len(jobs)

    def _build_all(
        self, jobs: list[storage.SendJob], secret: bytes, now: datetime
    ) -> tuple[list[tuple[int, bytes, bytes]], list[tuple[int, str]]]:
        """The mails serialised here (in the worker thread), not by the publisher on the loop."""
        built: list[tuple[int, bytes, bytes]] = []
        broken: list[tuple[int, str]] = []
        cache: dict[tuple[str, str], bytes] = {}
        for job in jobs:
            link = calendar_link(self.settings.event_triggers_public_url, secret, job.event["event_id"])
            try:
                request = build_request(
                    job,
                    calendar_link=link,
                    organizer=self.settings.default_sender,
                    domain=self.settings.mail_domain,
                    stamp=now,
                    ics_cache=cache,
                )
            except (CertificateError, ValueError) as exc:
                broken.append((job.send_id, f"{type(exc).__name__}: {exc}"))
                continue
            built.append((job.send_id, request.model_dump_json().encode(), job.correlation_id.encode()))
        return built, broken

    async def run_gdpr(self) -> None:
        now = self.clock.now()
        for event_id in await self.db(storage.gdpr_due_events, now):
            deleted = await self.db(storage.run_gdpr, event_id, now)
            if deleted:
                log.info("GDPR: deleted the form answers of %d registrations of event %s", deleted, event_id)
                self.context.outbox.wake()
