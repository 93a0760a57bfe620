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
    """Publishes failed messages to ``<topic>.dlq``."""

    def __init__(self, broker: KafkaBroker, settings: Settings) -> None:
        self.broker = broker
        self.settings = settings

    async def send(
        self,
        message: KafkaMessage,
        topic: str,
        reason: str,
        exc: BaseException | None,
        attempts: int,
    ) -> None:
        record = message.raw_message
        headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-dlq-")}
        headers.update(
            {
                "x-dlq-reason": reason[:MAX_REASON_CHARS],
                "x-dlq-exception": type(exc).__name__ if exc else "",
                "x-dlq-topic": topic,
                "x-dlq-partition": str(getattr(record, "partition", "")),
                "x-dlq-offset": str(getattr(record, "offset", "")),
                "x-dlq-attempts": str(attempts),
                "x-dlq-failed-at": datetime.now(UTC).isoformat(),
            }
        )
        key = getattr(record, "key", None)
        await self.broker.publish(message.body, self.settings.topic(dlq(topic)), key=key, headers=headers)
        MESSAGES_FAILED.labels(topic, "dead_lettered").inc()
        log.warning(
            "dead-lettered message from %s[%s]@%s: %s",
            topic,
            headers["x-dlq-partition"],
            headers["x-dlq-offset"],
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


def subscribe(
    broker: KafkaBroker,
    settings: Settings,
    topic: str,
    contract: Any,
    handler: Handler[Any],
    *,
    group: str,
    **subscriber_options: Any,
) -> Any:
    """Register ``handler`` for ``topic`` with validation, retries and dead-lettering."""
    adapter: TypeAdapter[Any] = TypeAdapter(contract)
    dead_letter = DeadLetter(broker, settings)
    options: dict[str, Any] = {
        # One group per (service, topic): a rebalance on one topic never pauses another.
        "group_id": f"{group}.{topic}",
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
        "title": f"{topic}:{handler.__name__}",
        **subscriber_options,
    }

    async def consume(message: KafkaMessage) -> None:
        raw: bytes = message.body
        if len(raw) > MAX_MESSAGE_BYTES:
            await dead_letter.send(message, topic, f"message larger than {MAX_MESSAGE_BYTES} bytes", None, 0)
            return
        try:
            payload = adapter.validate_json(raw)
        except ValidationError as exc:
            await dead_letter.send(message, topic, describe_validation_error(exc), exc, 0)
            return
        error, attempts = await run_with_retries(lambda: handler(payload), topic, settings)
        if error is None:
            MESSAGES_CONSUMED.labels(topic).inc()
            return
        await dead_letter.send(message, topic, f"{type(error).__name__}: {error}", error, attempts)

    consume.__name__ = handler.__name__
    subscriber = broker.subscriber(settings.topic(topic), **options)
    subscriber(consume)
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
