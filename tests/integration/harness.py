"""Run our services in-process against real servers, and talk to Kafka directly."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.service import ServiceApp
from shared.settings import Settings

API_KEY = "msk_testkey1_0123456789abcdefghij"
AUTH = {"X-API-Key": API_KEY}


def service_settings(kafka, unique, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a service under test: its own topic prefix and groups, a private data dir."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "var",
        "kafka_bootstrap": kafka.bootstrap,
        "kafka_topic_prefix": unique.prefix,
        "kafka_group_prefix": unique.id,
        "kafka_partitions": 3,
        "kafka_session_timeout_ms": 6_000,
        "kafka_heartbeat_interval_ms": 500,
        "consumer_retry_backoff_s": 0.05,
        "bootstrap_api_key": API_KEY,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running(
    create_app: Callable[[Settings], ServiceApp], settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """Start a service (migrations, topics, broker, consumers) and yield an HTTP client to it."""
    app = create_app(settings)
    async with app.start_lifespan_context():
        await wait_assigned(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


async def wait_assigned(app: ServiceApp, timeout: float = 60.0) -> None:
    """Wait until every subscriber of the app owns partitions (joined its consumer group)."""
    deadline = time.monotonic() + timeout
    for subscriber in app.service.broker.subscribers:
        while True:
            consumer = getattr(subscriber, "consumer", None)
            if consumer is not None and consumer.assignment():
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"subscriber {subscriber} got no partitions in {timeout}s")
            await asyncio.sleep(0.1)


async def produce(bootstrap: str, topic: str, values: list[bytes | dict], key: bytes | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            raw = value if isinstance(value, bytes) else json.dumps(value).encode()
            await producer.send_and_wait(topic, raw, key=key)
    finally:
        await producer.stop()


async def consume(
    bootstrap: str,
    topic: str,
    count: int,
    timeout: float = 30.0,
    done: Callable[[list[Any]], bool] | None = None,
) -> list[Any]:
    """Read ``count`` records from the start of ``topic`` (any partition); with ``done``, read
    until it says the records so far are enough (at-least-once topics may repeat records)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done(records) if done is not None else len(records) >= count:
                break
            batch = await consumer.getmany(timeout_ms=500)
            for items in batch.values():
                records.extend(items)
    finally:
        await consumer.stop()
    return records


async def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll an (async or sync) check until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
