"""Prometheus metrics shared by all services (exposed at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

MESSAGES_CONSUMED = Counter(
    "mailsvc_messages_consumed_total", "Kafka messages handled successfully", ["topic"]
)
MESSAGES_FAILED = Counter(
    "mailsvc_messages_failed_total",
    "Kafka message handling failures (outcome: retried or dead_lettered)",
    ["topic", "outcome"],
)
CONSUMER_LAG = Gauge(
    "mailsvc_consumer_lag", "Messages behind the partition's high watermark", ["topic", "partition"]
)
MAILS_SENT = Counter("mailsvc_mails_sent_total", "Emails accepted by the SMTP relay", ["service"])
MAILS_FAILED = Counter(
    "mailsvc_mails_failed_total", "Emails that failed (temporary or permanent)", ["service", "kind"]
)
IMAP_ERRORS = Counter("mailsvc_imap_errors_total", "IMAP connection or command errors", ["account"])
