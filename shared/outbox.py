"""Transactional outbox: events are written in the same database transaction as the change they
describe, and a relay publishes them to Kafka afterwards.

A crash between the commit and Kafka therefore cannot lose an event. A crash between publishing
and marking a row published can repeat it; every payload carries a ``message_id`` that stays the
same on repeats, so consumers recognise it (the contracts' consumers deduplicate on it).
Several relays (instances) share the table safely: each claims a batch with one conditional
UPDATE (lease), publishes it in id order, then deletes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from faststream.kafka import KafkaBroker
from pydantic import BaseModel
from sqlalchemy import JSON, Column, Row, Table, Text, and_, bindparam, delete, insert, or_, select, update
from sqlmodel import Field, Session, SQLModel

from shared.db import in_transaction
from shared.settings import Settings

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class OutboxEvent(SQLModel, table=True):
    __tablename__ = "outbox_event"

    id: int | None = Field(default=None, primary_key=True)
    topic: str = Field(max_length=255)
    key: str | None = Field(default=None, max_length=500)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    headers: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=_now)
    claimed_by: str | None = Field(default=None, max_length=64)
    claimed_until: datetime | None = None


def enqueue(
    session: Session,
    topic: str,
    payload: BaseModel | Mapping[str, Any],
    *,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> OutboxEvent:
    """Add an event to the current transaction; ``topic`` is the logical name (no prefix)."""
    body = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    row = OutboxEvent(topic=topic, key=key, payload=body, headers=dict(headers or {}))
    session.add(row)
    return row


EVENTS: Table = OutboxEvent.__table__  # type: ignore[attr-defined]
_c = EVENTS.c
_INSERT = insert(EVENTS)  # built once: reuse skips per-call statement construction


def enqueue_many(session: Session, topic: str, items: list[tuple[BaseModel, str | None]]) -> None:
    """``enqueue`` for many (payload, key) pairs at once: one Core INSERT, executed now (no ORM
    objects), in list order."""
    if not items:
        return
    moment = _now()
    rows = [
        {"topic": topic, "key": key, "payload": item.model_dump_json(), "headers": {}, "created_at": moment}
        for item, key in items
    ]
    session.connection().execute(_INSERT, rows)


def _free(moment: Any) -> Any:
    return or_(_c.claimed_until.is_(None), _c.claimed_until < moment)


# Built once (a relay pass runs them all; reuse skips SQLAlchemy's per-call construction).
_BUSY = (
    select(_c.id)
    .where(_c.claimed_until >= bindparam("b_moment"), _c.claimed_by != bindparam("b_token"))
    .limit(1)
)
_CANDIDATES = select(_c.id).where(_free(bindparam("b_moment"))).order_by(_c.id).limit(bindparam("b_limit"))
_CLAIM = (
    update(EVENTS)
    .where(and_(_c.id.in_(bindparam("b_ids", expanding=True)), _free(bindparam("b_moment"))))
    .values(claimed_by=bindparam("b_token"), claimed_until=bindparam("b_until"))
)
_CLAIMED = (
    select(_c.id, _c.topic, _c.key, _c.payload, _c.headers)
    .where(_c.claimed_by == bindparam("b_token"))
    .order_by(_c.id)
)
_REMOVE = delete(EVENTS).where(_c.id.in_(bindparam("b_ids", expanding=True)))


def claim_batch(session: Session, token: str, limit: int, lease_s: float) -> list[Row[Any]]:
    """Claim the oldest pending events, unless another relay holds a live claim: one relay
    publishes at a time, so events keep their order (per key and overall). Rows have ``id``,
    ``topic``, ``key``, ``payload`` and ``headers``."""
    db = session.connection()
    moment = _now()
    if db.execute(_BUSY, {"b_moment": moment, "b_token": token}).first() is not None:
        return []
    ids = [row_id for (row_id,) in db.execute(_CANDIDATES, {"b_moment": moment, "b_limit": limit})]
    if not ids:
        return []
    until = moment + timedelta(seconds=lease_s)
    db.execute(_CLAIM, {"b_ids": ids, "b_moment": moment, "b_token": token, "b_until": until})
    return list(db.execute(_CLAIMED, {"b_token": token}).all())


def remove(session: Session, ids: list[int]) -> None:
    session.connection().execute(_REMOVE, {"b_ids": ids})


class OutboxRelay:
    """Background task of a service: publishes pending outbox rows. ``wake()`` after a commit
    that enqueued events makes it publish at once instead of at the next poll."""

    def __init__(
        self,
        broker: KafkaBroker,
        settings: Settings,
        database_url: str,
        *,
        poll_s: float = 0.5,
        batch: int = 500,
        lease_s: float = 10.0,  # how long a dead relay's claimed batch waits for another relay
        coalesce_s: float = 0.01,  # after a wake-up: commits close together make one pass
    ) -> None:
        self.broker = broker
        self.settings = settings
        self.database_url = database_url
        self.poll_s = poll_s
        self.batch = batch
        self.lease_s = lease_s
        self.coalesce_s = coalesce_s
        self.instance = uuid.uuid4().hex[:12]
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def publish_pending(self) -> int:
        """Publish what is pending now; returns how many events went out."""
        token = f"{self.instance}:{uuid.uuid4().hex[:8]}"
        rows = await in_transaction(self.database_url, claim_batch, token, self.batch, self.lease_s)
        if not rows:
            return 0
        # All sends are queued first and confirmed together: one produce request carries many
        # events instead of one round trip each. aiokafka keeps order within a partition.
        # Only the confirmed prefix is removed: anything after a failure is sent again (and
        # recognised by its message_id), so a key's events never overtake each other.
        pending: list[asyncio.Future[Any]] = []
        published: list[int] = []
        try:
            for row in rows:
                pending.append(
                    await self.broker.publish(
                        row.payload.encode(),
                        self.settings.topic(row.topic),
                        key=row.key.encode() if row.key else None,
                        headers={"content-type": "application/json", **row.headers},
                        no_confirm=True,
                    )
                )
        finally:
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
            for row, outcome in zip(rows, outcomes, strict=False):
                if isinstance(outcome, BaseException):
                    log.warning("outbox relay: publishing to %s failed: %r; will retry", row.topic, outcome)
                    break
                published.append(row.id)  # type: ignore[arg-type]
            if published:
                await in_transaction(self.database_url, remove, published)
        return len(published)

    async def run_forever(self) -> None:
        while True:
            try:
                while await self.publish_pending() == self.batch:
                    pass
            except Exception:
                log.exception("outbox relay: publishing failed; will retry")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)
                await asyncio.sleep(self.coalesce_s)
            except TimeoutError:
                pass
            self._wake.clear()
