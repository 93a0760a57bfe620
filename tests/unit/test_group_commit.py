"""Group commit: concurrent calls share transactions, keep their order, and one bad call fails
alone (its neighbours commit, it gets its own exception)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from shared.db import get_engine
from shared.group_commit import GroupCommit, TransactionBatcher


def make_table(url: str) -> None:
    with get_engine(url).begin() as connection:
        connection.execute(text("CREATE TABLE seen (n INTEGER)"))


def stored(url: str) -> list[int]:
    with get_engine(url).connect() as connection:
        return [n for (n,) in connection.execute(text("SELECT n FROM seen ORDER BY rowid"))]


def insert(session, n: int) -> int:
    if n == 13:
        raise ValueError("unlucky")
    session.execute(text("INSERT INTO seen VALUES (:n)"), {"n": n})
    return n * 2


async def test_groups_keep_order_and_isolate_a_bad_item(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    make_table(url)
    group: GroupCommit[int, int] = GroupCommit(url, insert)
    results = await asyncio.gather(*(group.submit(n) for n in range(40)), return_exceptions=True)
    assert results[13].__class__ is ValueError
    assert [r for i, r in enumerate(results) if i != 13] == [n * 2 for n in range(40) if n != 13]
    assert stored(url) == [n for n in range(40) if n != 13]  # arrival order, the bad one left out


async def test_mixed_calls_share_transactions(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    make_table(url)
    batcher = TransactionBatcher(url)

    def count(session) -> int:
        return session.execute(text("SELECT count(*) FROM seen")).scalar_one()

    calls = [batcher.run(insert, n) if n % 5 else batcher.run(count) for n in range(1, 61)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[:5] == [2, 4, 6, 8, 4]  # the count sees the inserts queued before it
    assert isinstance(results[12], ValueError)  # insert(13) alone fails
    assert results[14] == 11  # 1..14 without 5, 10 (counts) and 13 (failed)
    assert stored(url) == [n for n in range(1, 61) if n % 5 and n != 13]
    assert batcher.transactions < 60


async def test_max_group_bounds_a_transaction(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    make_table(url)
    batcher = TransactionBatcher(url, max_group=7)
    sizes: list[int] = []

    def apply_all(session, calls):
        sizes.append(len(calls))
        return TransactionBatcher._apply_all(session, calls)

    batcher._apply_all = apply_all  # type: ignore[method-assign]
    await asyncio.gather(*(batcher.run(insert, n) for n in range(100) if n != 13))
    assert max(sizes) <= 7
    assert stored(url) == [n for n in range(100) if n != 13]
