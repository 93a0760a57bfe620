"""Group commit: concurrent handler calls share one database transaction, in arrival order.

A Kafka batch handled with some concurrency hands its records here one after another; while one
transaction runs, the next records queue up and go into the next one. If a group fails, its items
are applied one by one, so one bad message cannot fail (and dead-letter) its neighbours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlmodel import Session

from shared.db import in_transaction

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(self, url: str, work: Callable[[Session, T], R]) -> None:
        self.url = url
        self.work = work
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._draining = False
        self._task: asyncio.Task[None] | None = None  # keep a reference: the loop holds tasks weakly

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._draining:
            self._draining = True
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await future

    def _apply_all(self, session: Session, items: list[T]) -> list[R]:
        return [self.work(session, item) for item in items]

    async def _drain(self) -> None:
        try:
            while self._pending:
                group, self._pending = self._pending, []
                try:
                    results = await in_transaction(self.url, self._apply_all, [item for item, _ in group])
                except Exception:
                    await self._one_by_one(group)
                    continue
                for (_, future), result in zip(group, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._draining = False

    async def _one_by_one(self, group: list[tuple[T, asyncio.Future[Any]]]) -> None:
        for item, future in group:
            try:
                result = await in_transaction(self.url, self.work, item)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)
