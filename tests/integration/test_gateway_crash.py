"""Acceptance: the gateway is SIGKILLed mid-stream and restarted; every mail arrives exactly once."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from shared.settings import Settings
from tests.integration.harness import consume, produce
from tests.servers.procs import free_port

pytestmark = pytest.mark.timeout(300)
TOTAL = 200


def start_gateway(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "faststream",
            "run",
            "services.mass_mailer.app:app",
            "--port",
            str(free_port()),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def slow_acceptance(_message) -> None:
    time.sleep(0.01)  # a relay that takes 10 ms per message, so the kill lands mid-stream


async def test_kill_9_mid_stream_loses_nothing_and_sends_nothing_twice(
    kafka_broker, unique, smtp_sink, tmp_path
):
    smtp_sink.hook = slow_acceptance
    env = {
        **os.environ,
        "MAILSVC_DATA_DIR": str(tmp_path / "var"),
        "MAILSVC_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "MAILSVC_KAFKA_TOPIC_PREFIX": unique.prefix,
        "MAILSVC_KAFKA_GROUP_PREFIX": unique.id,
        "MAILSVC_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "MAILSVC_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "MAILSVC_SMTP_HOST": smtp_sink.host,
        "MAILSVC_SMTP_PORT": str(smtp_sink.port),
        "MAILSVC_GATEWAY_LEASE_S": "3",
        "MAILSVC_GATEWAY_SWEEP_INTERVAL_S": "0.2",
        "MAILSVC_GATEWAY_RETRY_BASE_S": "0.3",
        "MAILSVC_MASTER_KEY": "",
    }
    env.pop("MAILSVC_MASTER_KEY")
    settings = Settings(kafka_topic_prefix=unique.prefix)
    first = start_gateway(env)
    try:
        await produce(
            kafka_broker.bootstrap,
            settings.topic("mail.outbound.transactional"),
            [
                {
                    "correlation_id": f"cid-{i}",
                    "to": ["rcpt@example.org"],
                    "subject": f"msg cid-{i}",
                    "text": "x",
                }
                for i in range(TOTAL)
            ],
        )
        deadline = time.monotonic() + 120
        while len(smtp_sink.messages) < TOTAL // 3:
            assert time.monotonic() < deadline, "the first gateway never got going"
            assert first.poll() is None, "the first gateway died on its own"
            await asyncio.sleep(0.02)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at = len(smtp_sink.messages)

    second = start_gateway(env)
    try:
        deadline = time.monotonic() + 120
        while len({m.message["Subject"] for m in smtp_sink.messages}) < TOTAL:
            assert time.monotonic() < deadline, f"only {len(smtp_sink.messages)} of {TOTAL} arrived"
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # time for a duplicate to show up, if there were one
        events = await consume(
            kafka_broker.bootstrap,
            settings.topic("mail.delivery-events"),
            TOTAL,
            timeout=90,  # events of the killed instance wait for its outbox claim to expire
            done=lambda records: len(sent_ids(records)) >= TOTAL,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)

    counts = collections.Counter(str(m.message["Subject"]) for m in smtp_sink.messages)
    duplicates = {subject: n for subject, n in counts.items() if n > 1}
    print(f"killed after {killed_at} messages; duplicates: {len(duplicates)}")
    assert duplicates == {}
    assert set(counts) == {f"msg cid-{i}" for i in range(TOTAL)}
    assert sent_ids(events) == {f"cid-{i}" for i in range(TOTAL)}


def sent_ids(records) -> set[str]:
    """Correlation ids with a ``sent`` event (the outbox may repeat an event after a crash)."""
    return {json.loads(r.value)["correlation_id"] for r in records if json.loads(r.value)["status"] == "sent"}
