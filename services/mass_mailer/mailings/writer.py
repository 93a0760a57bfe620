"""Group commit of delivery state: many concurrent sends share one database transaction.

``handed_over`` marks must be stored before the final dot (so a crash never sends twice); they
are awaited by the sender, and every mark that arrives while a commit runs joins the next one.
Results are written the same way; a batch handler awaits them before its offset is committed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.mass_mailer.mailings import store
from shared.db import in_transaction


class DeliveryWriter:
    def __init__(self, database_url: str, lease_s: float) -> None:
        self.database_url = database_url
        self.lease_s = lease_s
        self._handed: list[int] = []
        self._results: list[dict[str, Any]] = []
        self._released: list[tuple[int, str]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._running: asyncio.Task[None] | None = None

    async def handed_over(self, delivery_id: int) -> None:
        self._handed.append(delivery_id)
        await self._join()

    async def result(self, values: dict[str, Any]) -> None:
        self._results.append(values)
        await self._join()

    async def release(self, delivery_id: int, owner: str) -> None:
        self._released.append((delivery_id, owner))
        await self._join()

    async def _join(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._commit_loop())
        await future

    async def _commit_loop(self) -> None:
        while self._waiters:
            await asyncio.sleep(0.002)  # let concurrent sends join this commit
            waiters, self._waiters = self._waiters, []
            handed, self._handed = self._handed, []
            results, self._results = self._results, []
            released, self._released = self._released, []
            try:
                await in_transaction(self.database_url, self._write, handed, results, released)
            except Exception as exc:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                continue
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _write(
        self, session: Any, handed: list[int], results: list[dict[str, Any]], released: list[tuple[int, str]]
    ) -> None:
        if handed:
            store.mark_handed_over(session, handed, self.lease_s)
        store.write_results(session, results)
        owners: dict[str, list[int]] = {}
        for delivery_id, owner in released:
            owners.setdefault(owner, []).append(delivery_id)
        for owner, ids in owners.items():
            store.release(session, ids, owner)
