"""The transactional outbox through a real broker: committed events go out, rolled-back ones never."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlmodel import select

from shared.broker import make_broker
from shared.db import migrate, session_scope
from shared.outbox import OutboxEvent, OutboxRelay, enqueue
from tests.integration.harness import consume, service_settings


async def test_committed_events_are_published_in_order_and_rolled_back_ones_never(
    kafka_broker, unique, tmp_path, db_url
):
    settings = service_settings(kafka_broker, unique, tmp_path, database_url=db_url)
    migrate("mail_scanner", db_url)
    with session_scope(db_url) as session:
        for i in range(5):
            enqueue(session, "helpdesk.ticket-events", {"message_id": f"m{i}", "n": i}, key="T1")
    with pytest.raises(RuntimeError), session_scope(db_url) as session:
        enqueue(session, "helpdesk.ticket-events", {"message_id": "rolled-back"}, key="T1")
        raise RuntimeError("the business change failed")

    broker = make_broker(settings)
    async with broker:
        await broker.start()
        relays = [
            OutboxRelay(broker, settings, db_url, batch=2),
            OutboxRelay(broker, settings, db_url, batch=2),
        ]
        sent = await asyncio.gather(*(r.publish_pending() for r in relays))
        while sum(sent) < 5:
            sent.append(await relays[0].publish_pending())
    records = await consume(kafka_broker.bootstrap, settings.topic("helpdesk.ticket-events"), 5)
    assert [json.loads(r.value)["n"] for r in records] == [0, 1, 2, 3, 4]
    assert all(r.key == b"T1" for r in records)
    with session_scope(db_url) as session:
        assert session.exec(select(OutboxEvent)).all() == []
