"""Group commit: concurrent submissions share transactions, keep their order, and one bad item
fails alone."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from services.event_triggers.group_commit import GroupCommit
from shared.db import get_engine


async def test_groups_keep_order_and_isolate_a_bad_item(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    with get_engine(url).begin() as connection:
        connection.execute(text("CREATE TABLE seen (n INTEGER)"))

    def work(session, n: int) -> int:
        if n == 13:
            raise ValueError("unlucky")
        session.execute(text("INSERT INTO seen VALUES (:n)"), {"n": n})
        return n * 2

    group: GroupCommit[int, int] = GroupCommit(url, work)
    results = await asyncio.gather(*(group.submit(n) for n in range(40)), return_exceptions=True)
    assert results[13].__class__ is ValueError
    assert [r for i, r in enumerate(results) if i != 13] == [n * 2 for n in range(40) if n != 13]
    with get_engine(url).connect() as connection:
        stored = [n for (n,) in connection.execute(text("SELECT n FROM seen ORDER BY rowid"))]
    assert stored == [n for n in range(40) if n != 13]  # arrival order, the bad one left out


class Counting(GroupCommit[int, int]):
    def __init__(self, url: str) -> None:
        super().__init__(url, lambda session, n: n)
        self.groups: list[list[int]] = []

    def _apply_all(self, session, items: list[int]) -> list[int]:
        self.groups.append(list(items))
        return super()._apply_all(session, items)


async def test_concurrent_submissions_share_transactions(tmp_path):
    group = Counting(f"sqlite:///{tmp_path / 'g.db'}")
    assert await asyncio.gather(*(group.submit(n) for n in range(50))) == list(range(50))
    assert [n for g in group.groups for n in g] == list(range(50))
    assert len(group.groups) < 50
