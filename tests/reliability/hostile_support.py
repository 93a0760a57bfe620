"""Helpers of the hostile-input suites: one in-process instance of a service per test module."""

from __future__ import annotations

import asyncio
import email
import email.policy
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from shared.apikeys import create_api_key
from shared.db import session_scope
from shared.secretbox import generate_master_key
from shared.service import ServiceApp
from shared.settings import Settings
from tests.conftest import UniqueNames
from tests.integration.harness import service_settings, wait_assigned
from tests.reliability.logcapture import register_secret


@dataclass
class Running:
    """A started service: its app (route tables, context) and an HTTP client to it."""

    app: ServiceApp
    client: httpx.AsyncClient
    settings: Settings
    names: UniqueNames

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    def api_key(self, *scopes: str) -> str:
        """A new API key with exactly these scopes (registered as a secret for the log grep)."""
        with session_scope(self.app.service.database_url) as session:
            _, token = create_api_key(session, f"test-{secrets.token_hex(3)}", scopes)
        register_secret(token.split("_", 2)[2], "an API key secret created by a test")
        return token


def hostile_settings(
    kafka: Any, tmp: Path, names: UniqueNames | None = None, **overrides: Any
) -> tuple[Settings, UniqueNames]:
    """Fast-retry settings with a fresh master key and link secret (both registered as secrets)."""
    names = names or UniqueNames()
    master = generate_master_key()
    link_secret = secrets.token_urlsafe(24)
    register_secret(master, "the master key")
    register_secret(link_secret, "the mailing link secret")
    values: dict[str, Any] = {
        "master_key": master,
        "mailing_link_secret": link_secret,
        "consumer_max_attempts": 2,
        **overrides,
    }
    return service_settings(kafka, names, tmp, **values), names


@asynccontextmanager
async def started(
    create_app: Callable[[Settings], ServiceApp], settings: Settings, names: UniqueNames
) -> AsyncIterator[Running]:
    """Start a service like harness.running, in its own task, so a module-scoped fixture may
    enter and leave it from different tasks (anyio cancel scopes must exit where they entered)."""
    app = create_app(settings)
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def serve() -> None:
        async with app.start_lifespan_context():
            await wait_assigned(app)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
                ready.set_result(Running(app, client, settings, names))
                await stop.wait()

    task = asyncio.create_task(serve(), name=f"serve-{names.id}")

    def failed(done: asyncio.Task[None]) -> None:
        if not ready.done():
            error = None if done.cancelled() else done.exception()
            ready.set_exception(error or RuntimeError("the service stopped before it was ready"))

    task.add_done_callback(failed)
    try:
        yield await ready
    finally:
        stop.set()
        await task


def parse_mail(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def header_names(message: EmailMessage) -> list[str]:
    """Top-level header names, lower-cased, in order (duplicates kept)."""
    return [name.lower() for name in message.keys()]


@asynccontextmanager
async def fleet(
    factories: dict[str, Callable[[Settings], ServiceApp]],
    kafka: Any,
    tmp: Path,
    *,
    connected: bool = False,
    **overrides: Any,
) -> AsyncIterator[dict[str, Running]]:
    """Several services started at once, each with its own data dir and keys; with ``connected``
    they share one topic prefix (they talk to each other), else each has its own."""
    shared = UniqueNames() if connected else None
    contexts = {}
    for name, factory in factories.items():
        settings, names = hostile_settings(kafka, tmp / name, shared, **overrides)
        contexts[name] = started(factory, settings, names)
    entered = await asyncio.gather(*(c.__aenter__() for c in contexts.values()), return_exceptions=True)
    try:
        for result in entered:
            if isinstance(result, BaseException):
                raise result
        yield dict(zip(contexts, entered, strict=True))  # type: ignore[arg-type]
    finally:
        await asyncio.gather(
            *(
                context.__aexit__(None, None, None)
                for context, result in zip(contexts.values(), entered, strict=True)
                if not isinstance(result, BaseException)
            )
        )


async def read_all(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    """Every record of ``topic`` (all partitions, from the start up to the current end)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            batch = await consumer.getmany(timeout_ms=500)
            for items in batch.values():
                records.extend(items)
        return records
    finally:
        await consumer.stop()
