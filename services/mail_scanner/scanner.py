"""The scanner's background task: lease active accounts and run one worker thread per account.

See ``accounts`` for why instances split accounts with database leases.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid

from services.mail_scanner import accounts, parsepool, tickets
from services.mail_scanner.fetcher import AccountWorker
from services.mail_scanner.intake import Engine
from shared.db import in_transaction, session_scope
from shared.secretbox import SecretBox
from shared.service import ServiceContext

log = logging.getLogger(__name__)
_running: set[Scanner] = set()  # the scanners of this process (they share the parse pool)


def load_engine(context: ServiceContext, box: SecretBox) -> Engine:
    with session_scope(context.database_url) as session:
        secret = tickets.signing_secret(session, box)
    return Engine(settings=context.settings, secret=secret)


class Scanner:
    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.settings = context.settings
        self.token = f"{uuid.uuid4().hex[:16]}"
        self.workers: dict[int, AccountWorker] = {}
        self._box: SecretBox | None = None
        self._engine: Engine | None = None

    @property
    def box(self) -> SecretBox:
        if self._box is None:
            self._box = SecretBox.from_settings(self.settings)
        return self._box

    async def engine(self) -> Engine:
        if self._engine is None:
            self._engine = await asyncio.to_thread(load_engine, self.context, self.box)
        return self._engine

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(self.context.outbox.wake)

        _running.add(self)
        # the parse workers start with the service, in the background (their imports take a while)
        threading.Thread(target=parsepool.warm_up, name="parse-pool-warm-up", daemon=True).start()
        try:
            while True:
                try:
                    await self._tick(wake)
                except Exception:
                    log.exception("scanner: claiming accounts failed; will retry")
                await asyncio.sleep(self.settings.scanner_claim_interval_s)
        finally:
            await self.stop()

    async def _tick(self, wake: object) -> None:
        for account_id, worker in list(self.workers.items()):
            if not worker.is_alive():
                del self.workers[account_id]
        claimed = await in_transaction(
            self.context.database_url,
            accounts.claim_accounts,
            self.token,
            self.settings.scanner_max_accounts,
            self.settings.scanner_lease_s,
        )
        engine = await self.engine()
        for account_id in claimed:
            if account_id in self.workers:
                continue
            worker = AccountWorker(account_id, self.token, engine, self.context.database_url, self.box, wake)  # type: ignore[arg-type]
            self.workers[account_id] = worker
            worker.start()
            log.info("scanner: scanning account %s", account_id)

    async def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        for account_id, worker in list(self.workers.items()):
            await asyncio.to_thread(worker.join, 10)
            try:
                await in_transaction(self.context.database_url, accounts.release, account_id, self.token)
            except Exception:
                log.exception("scanner: could not release account %s", account_id)
        self.workers.clear()
        _running.discard(self)
        if not _running:
            await asyncio.to_thread(parsepool.shutdown, True)
