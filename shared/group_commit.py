"""Group commit: concurrent callers share one database transaction, in arrival order.

Handlers working on many records at once each need a few small transactions; committing each
one alone makes the commit (an fsync on SQLite, a round trip on PostgreSQL) the bottleneck.
Here, while one transaction runs, the next calls queue up and go into the next one together.
If a group fails, its calls are applied one by one, so one failing call (a lost lease, a bad
record) cannot fail its neighbours; each caller gets exactly its own result or exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlmodel import Session

from shared.db import in_transaction

T = TypeVar("T")
R = TypeVar("R")

Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class TransactionBatcher:
    """``await batcher.run(work, *args)`` = ``in_transaction(url, work, *args)``, grouped."""

    def __init__(self, url: str, *, max_group: int = 500) -> None:
        self.url = url
        self.max_group = max_group
        self._pending: list[tuple[Call, asyncio.Future[Any]]] = []
        self._draining = False
        self._task: asyncio.Task[None] | None = None  # keep a reference: the loop holds tasks weakly
        self.transactions = 0  # how many transactions ran (for tests and benchmarks)

    async def run(self, work: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append(((work, args, kwargs), future))
        if not self._draining:
            self._draining = True
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await future

    @staticmethod
    def _apply_all(session: Session, calls: list[Call]) -> list[Any]:
        results = []
        for index, (work, args, kwargs) in enumerate(calls):
            try:
                results.append(work(session, *args, **kwargs))
            except Exception as exc:
                raise _CallFailed(index) from exc
        return results

    async def _drain(self) -> None:
        try:
            while self._pending:
                group, self._pending = self._pending[: self.max_group], self._pending[self.max_group :]
                await self._run_group(group)
        finally:
            self._draining = False

    async def _run_group(self, group: list[tuple[Call, asyncio.Future[Any]]]) -> None:
        """Commit ``group`` in one transaction; when call i fails, the calls before it commit
        together, call i runs alone (its result or exception is its own), the rest go on."""
        while group:
            if len(group) == 1:
                await self._alone(*group[0])
                return
            self.transactions += 1
            try:
                results = await in_transaction(self.url, self._apply_all, [call for call, _ in group])
            except _CallFailed as failure:
                i = failure.index
                before, failed, group = group[:i], group[i], group[i + 1 :]
                if before:
                    await self._run_group(before)
                await self._alone(*failed)
                continue
            except Exception:  # the commit itself failed: nobody can say which call caused it
                for call, future in group:
                    await self._alone(call, future)
                return
            for (_, future), result in zip(group, results, strict=True):
                if not future.done():
                    future.set_result(result)
            return

    async def _alone(self, call: Call, future: asyncio.Future[Any]) -> None:
        work, args, kwargs = call
        self.transactions += 1
        try:
            result = await in_transaction(self.url, work, *args, **kwargs)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(result)


class _CallFailed(Exception):
    def __init__(self, index: int) -> None:
        super().__init__(f"call {index} of the group failed")
        self.index = index


class GroupCommit(Generic[T, R]):
    """One kind of work per item: ``await GroupCommit(url, work).submit(item)``."""

    def __init__(self, url: str, work: Callable[[Session, T], R]) -> None:
        self.work = work
        self.batcher = TransactionBatcher(url)

    async def submit(self, item: T) -> R:
        return await self.batcher.run(self.work, item)
