"""Consumers that never drop and never block: validate, retry, or dead-letter with the reason.

``subscribe`` registers a handler for one topic. Per message:
1. the payload is validated against the topic's contract; invalid JSON, unknown schema versions and
   oversized values go straight to ``<topic>.dlq``;
2. the handler runs; ``TransientError`` (database or relay down) is retried with exponential
   backoff until ``consumer_transient_deadline_s``; any other exception is retried
   ``consumer_max_attempts`` times; ``PermanentError`` is not retried;
3. a message that still fails is published to ``<topic>.dlq`` with the original bytes and headers
   plus ``x-dlq-*`` headers (reason, exception type, origin topic/partition/offset, attempts), and the
   offset is committed, so the partition keeps moving.
If even the dead-letter publish fails, the message is not committed and Kafka redelivers it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from pydantic import TypeAdapter, ValidationError

from shared.errors import PermanentError, TransientError
from shared.metrics import CONSUMER_LAG, MESSAGES_CONSUMED, MESSAGES_FAILED
from shared.settings import Settings
from shared.topics import dlq

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[T], Awaitable[None]]

MAX_MESSAGE_BYTES = 1_048_576
MAX_REASON_CHARS = 1_000


def describe_validation_error(error: ValidationError) -> str:
    """A short reason that names fields and problems without echoing the (possibly private) input."""
    problems = [
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
        for e in error.errors(include_input=False, include_url=False)[:10]
    ]
    return "invalid message: " + "; ".join(problems)


def backoff_delay(attempt: int, base: float, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter (attempt counts from 1)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))  # noqa: S311


class DeadLetter:
    """Publishes failed records to ``<topic>.dlq``: original bytes, key and headers plus reasons."""

    def __init__(self, broker: KafkaBroker, settings: Settings, group: str = "") -> None:
        self.broker = broker
        self.settings = settings
        self.group = group  # the consumer group that gave up (several groups read one topic)

    async def send(
        self, record: ConsumerRecord, topic: str, reason: str, exc: BaseException | None, attempts: int
    ) -> None:
        headers = {
            k: v.decode("utf-8", "replace") for k, v in (record.headers or ()) if not k.startswith("x-dlq-")
        }
        headers.update(
            {
                "x-dlq-reason": reason[:MAX_REASON_CHARS],
                "x-dlq-exception": type(exc).__name__ if exc else "",
                "x-dlq-topic": topic,
                "x-dlq-group": self.group,
                "x-dlq-partition": str(record.partition),
                "x-dlq-offset": str(record.offset),
                "x-dlq-attempts": str(attempts),
                "x-dlq-failed-at": datetime.now(UTC).isoformat(),
            }
        )
        await self.broker.publish(
            record.value or b"", self.settings.topic(dlq(topic)), key=record.key, headers=headers
        )
        MESSAGES_FAILED.labels(topic, "dead_lettered").inc()
        log.warning(
            "dead-lettered message from %s[%s]@%s: %s",
            topic,
            record.partition,
            record.offset,
            reason[:MAX_REASON_CHARS],
        )


async def run_with_retries(
    handler: Callable[[], Awaitable[None]], topic: str, settings: Settings
) -> tuple[BaseException | None, int]:
    """Run ``handler`` under the retry policy; returns the final error (None on success)."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            await handler()
            return None, attempt
        except PermanentError as exc:
            return exc, attempt
        except TransientError as exc:
            if time.monotonic() - started >= settings.consumer_transient_deadline_s:
                return exc, attempt
            error: BaseException = exc
        except Exception as exc:  # any bug or unexpected input: bounded retries
            if attempt >= settings.consumer_max_attempts:
                return exc, attempt
            error = exc
        MESSAGES_FAILED.labels(topic, "retried").inc()
        delay = backoff_delay(attempt, settings.consumer_retry_backoff_s)
        log.info("retrying %s message in %.2fs after %s: %s", topic, delay, type(error).__name__, error)
        await asyncio.sleep(delay)


async def process_record(
    record: ConsumerRecord,
    topic: str,
    adapter: TypeAdapter[Any],
    handler: Handler[Any],
    dead_letter: DeadLetter,
    settings: Settings,
) -> None:
    """Validate, handle with retries, or dead-letter one record. Raises only if the DLQ is down."""
    raw: bytes = record.value or b""
    if len(raw) > MAX_MESSAGE_BYTES:
        await dead_letter.send(record, topic, f"message larger than {MAX_MESSAGE_BYTES} bytes", None, 0)
        return
    try:
        payload = adapter.validate_json(raw)
    except ValidationError as exc:
        await dead_letter.send(record, topic, describe_validation_error(exc), exc, 0)
        return
    error, attempts = await run_with_retries(lambda: handler(payload), topic, settings)
    if error is None:
        MESSAGES_CONSUMED.labels(topic).inc()
        return
    await dead_letter.send(record, topic, f"{type(error).__name__}: {error}", error, attempts)


def subscribe(
    broker: KafkaBroker,
    settings: Settings,
    topic: str,
    contract: Any,
    handler: Handler[Any],
    *,
    group: str,
    batch_size: int = 1,
    concurrency: int = 1,
    **subscriber_options: Any,
) -> Any:
    """Register ``handler`` for ``topic`` with validation, retries and dead-lettering.

    With ``batch_size`` > 1 records are fetched in batches and up to ``concurrency`` of them are
    handled at once (order within a batch is then not kept: only for order-insensitive topics);
    the batch is committed when every record has succeeded or been dead-lettered.
    """
    adapter: TypeAdapter[Any] = TypeAdapter(contract)
    group_id = (
        f"{group}.{topic}"  # one group per (service, topic): a rebalance on one topic never pauses another
    )
    dead_letter = DeadLetter(broker, settings, group_id)
    options: dict[str, Any] = {
        "group_id": group_id,
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
        "title": f"{topic}:{handler.__name__}",
        **subscriber_options,
    }

    async def consume(message: KafkaMessage) -> None:
        await process_record(message.raw_message, topic, adapter, handler, dead_letter, settings)

    async def consume_batch(message: KafkaMessage) -> None:
        limit = asyncio.Semaphore(concurrency)

        async def one(record: ConsumerRecord) -> None:
            async with limit:
                await process_record(record, topic, adapter, handler, dead_letter, settings)

        results = await asyncio.gather(*(one(r) for r in message.raw_message), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]

    if batch_size > 1:
        options.update(batch=True, max_records=batch_size)
        entry = consume_batch
    else:
        entry = consume
    entry.__name__ = handler.__name__
    subscriber = broker.subscriber(settings.topic(topic), **options)
    subscriber(entry)
    return subscriber


async def update_consumer_lag(broker: KafkaBroker) -> None:
    """Refresh the lag gauge from every subscriber's assigned partitions."""
    for subscriber in broker.subscribers:
        consumer = getattr(subscriber, "consumer", None)
        if consumer is None:
            continue
        try:
            assignment = consumer.assignment()
        except Exception:  # noqa: S112 - consumer not started yet or closing
            continue
        for tp in assignment:
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await consumer.position(tp)
            except Exception:  # noqa: S112 - rebalancing: skip this partition
                continue
            CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))
