"""Topic provisioning: every topic of the system and its dead-letter twin, created if missing."""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from shared.settings import Settings
from shared.topics import ALL_TOPICS, CONSUMED_TOPICS, dlq

TOPIC_ALREADY_EXISTS = 36


class TopicProvisioningError(RuntimeError):
    pass


def system_topics(settings: Settings) -> list[str]:
    """Every topic, plus a ``.dlq`` twin for each consumed one, with the configured prefix."""
    names = [*ALL_TOPICS, *(dlq(t) for t in CONSUMED_TOPICS)]
    return [settings.topic(name) for name in names]


def admin_client(settings: Settings) -> AIOKafkaAdminClient:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
        "request_timeout_ms": 10_000,
    }
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        )
    if "SSL" in settings.kafka_security_protocol.upper():
        options["ssl_context"] = ssl.create_default_context()
    return AIOKafkaAdminClient(**options)


async def ensure_topics(settings: Settings, partitions: int | None = None) -> list[str]:
    """Create the system's topics that do not exist yet; returns all their names."""
    topics = system_topics(settings)
    admin = admin_client(settings)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            count = partitions or settings.kafka_partitions
            response = await admin.create_topics(
                [NewTopic(t, count, settings.kafka_replication_factor) for t in missing]
            )
            failed = [
                f"{topic}: error {code} {message}"
                for topic, code, message in response.topic_errors
                if code not in (0, TOPIC_ALREADY_EXISTS)
            ]
            if failed:
                raise TopicProvisioningError("could not create topics: " + "; ".join(failed))
    except KafkaError as exc:
        raise TopicProvisioningError(f"could not create topics: {exc!r}") from exc
    finally:
        await admin.close()
    return topics
