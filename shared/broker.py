"""The FastStream Kafka broker, built from settings."""

from __future__ import annotations

from typing import Any

from faststream.kafka import KafkaBroker
from faststream.security import SASLPlaintext, SASLScram256, SASLScram512

from shared.settings import Settings


def _security(settings: Settings) -> Any:
    mechanism = (settings.kafka_sasl_mechanism or "").upper()
    if not mechanism:
        return None
    import ssl

    use_ssl = settings.kafka_security_protocol.upper() == "SASL_SSL"
    credentials = {
        "username": settings.kafka_sasl_username or "",
        "password": settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else "",
        "ssl_context": ssl.create_default_context() if use_ssl else None,
    }
    factories = {
        "PLAIN": SASLPlaintext,
        "SCRAM-SHA-256": SASLScram256,
        "SCRAM-SHA-512": SASLScram512,
    }
    if mechanism not in factories:
        raise ValueError(f"unsupported SASL mechanism {mechanism!r}")
    return factories[mechanism](**credentials)


def make_broker(settings: Settings, client_id: str = "mailsvc", **options: Any) -> KafkaBroker:
    """A KafkaBroker for ``settings.kafka_bootstrap``; publishers wait for all in-sync replicas."""
    return KafkaBroker(
        settings.kafka_bootstrap.split(","),
        client_id=client_id,
        security=_security(settings),
        acks="all",
        enable_idempotence=False,  # Tansu (dev broker) rejects InitProducerId
        **options,
    )
