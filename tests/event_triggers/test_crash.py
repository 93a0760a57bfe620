"""Acceptance: the trigger service (a `faststream run` process) is SIGKILLed while reminders
are being dispatched, then restarted: every reminder reaches SMTP exactly once.

200 reminders in the regular suite (the in-process gateway and aiosmtpd are the slow part);
the soak variant with 1,000: ``MAILSVC_TEST_REMINDERS=1000 uv run pytest tests/event_triggers/test_crash.py``.

The gateway (mass mailer, in-process) renders the mails into an aiosmtpd sink; the trigger
service reads "now" from a clock file that the test moves past the reminders' due time.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.event_triggers.clock import FileClock
from services.mass_mailer.app import create_app as create_mailer
from shared.secretbox import generate_master_key
from tests.event_triggers.conftest import trigger_settings
from tests.event_triggers.helpers import T0, event_message, outbound, publish, registration_message
from tests.event_triggers.test_end_to_end import DESIGN, create_template
from tests.integration.harness import API_KEY, AUTH, eventually, running
from tests.servers.procs import free_port

pytestmark = pytest.mark.timeout(400)
TOTAL = int(os.environ.get("MAILSVC_TEST_REMINDERS", "200"))


def start_triggers(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "faststream", "run", "services.event_triggers.app:app", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_healthy(client: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> None:
    async def healthy() -> bool:
        assert proc.poll() is None, "the trigger service died on its own"
        try:
            return (await client.get("/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(healthy, timeout=90)


async def test_kill_9_while_reminders_are_due_sends_each_once(kafka_broker, unique, tmp_path, smtp_sink):
    settings = trigger_settings(
        kafka_broker, unique, tmp_path,
        smtp_host=smtp_sink.host, smtp_port=smtp_sink.port, master_key=generate_master_key(),
        gateway_concurrency=32,
    )  # fmt: skip
    clock_file = tmp_path / "clock.txt"
    FileClock.write(clock_file, T0)
    port = free_port()
    env = {
        **os.environ,
        "MAILSVC_DATA_DIR": str(tmp_path / "triggers"),
        "MAILSVC_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "MAILSVC_KAFKA_TOPIC_PREFIX": unique.prefix,
        "MAILSVC_KAFKA_GROUP_PREFIX": unique.id,
        "MAILSVC_KAFKA_PARTITIONS": "3",
        "MAILSVC_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "MAILSVC_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "MAILSVC_BOOTSTRAP_API_KEY": API_KEY,
        "MAILSVC_EVENT_TRIGGERS_CLOCK_FILE": str(clock_file),
        "MAILSVC_EVENT_TRIGGERS_LEASE_S": "3",
        "MAILSVC_EVENT_TRIGGERS_SCHEDULER_INTERVAL_S": "0.2",
        "MAILSVC_EVENT_TRIGGERS_BATCH_SIZE": "10",
        "MAILSVC_EVENT_TRIGGERS_LINK_SECRET": "crash-test",
    }
    env.pop("MAILSVC_DATABASE_URL", None)
    start = T0 + timedelta(days=10)
    async with (
        running(create_mailer, settings) as mailer,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=30) as client,
    ):
        template_id = await create_template(
            mailer, settings, {"name": "Reminder", "subject": "Soon", "design": DESIGN}
        )
        first = start_triggers(env, port)
        try:
            await wait_healthy(client, first)
            await publish(
                kafka_broker, settings, "crm.mass-events", [event_message("EK", start=start)], "event_id"
            )

            async def trigger() -> dict | None:
                body = {
                    "name": "reminder",
                    "template_id": template_id,
                    "action": "before_start",
                    "offset_value": 2,
                }
                reply = await client.post("/v1/mass-events/EK/triggers", json=body)
                return reply.json() if reply.status_code == 201 else None

            trigger_id = (await eventually(trigger, timeout=90))["id"]
            await register(kafka_broker.bootstrap, settings.topic("crm.registrations"), TOTAL)

            async def stats() -> dict:
                return (await client.get(f"/v1/triggers/{trigger_id}/stats")).json()

            t_planned = time.monotonic()
            await eventually(lambda: _planned(stats, TOTAL), timeout=120)
            print(f"planned in {time.monotonic() - t_planned:.1f} s")
            FileClock.write(clock_file, start - timedelta(days=2) + timedelta(seconds=1))
            deadline = time.monotonic() + 60
            while (await stats())["sends"].get("sent", 0) < TOTAL // 5:
                assert time.monotonic() < deadline, "the reminders were never dispatched"
                await asyncio.sleep(0.02)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        second = start_triggers(env, port)
        try:
            await wait_healthy(client, second)
            killed_at = (await stats())["sends"]
            assert killed_at.get("sent", 0) < TOTAL, (
                "the kill did not land while reminders were being dispatched"
            )

            async def all_delivered() -> bool:
                return len({m.message["To"] for m in smtp_sink.messages}) >= TOTAL

            t_restart = time.monotonic()
            await eventually(all_delivered, timeout=240, interval=0.5)
            print(f"delivered in {time.monotonic() - t_restart:.1f} s after restart")
            await asyncio.sleep(3)  # room for a duplicate, if there were one
            final = await eventually(lambda: _delivered(stats, TOTAL), timeout=60)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
        published = await outbound(kafka_broker, settings, at_least=TOTAL + 10_000, timeout=5)

    counts = collections.Counter(str(m.message["To"]) for m in smtp_sink.messages)
    republished = len(published) - len({m["correlation_id"] for m in published})
    print(f"killed with sends {killed_at}; republished after the crash: {republished}")
    assert {n for n in counts.values()} == {1}
    assert set(counts) == {f"k{i}@example.org" for i in range(TOTAL)}
    assert final["sends"] == {"sent": TOTAL}


async def register(bootstrap: str, topic: str, total: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        now = datetime.now(UTC)
        futures = []
        for i in range(total):
            message = registration_message(f"K{i}", event_id="EK", occurred_at=now)
            futures.append(await producer.send(topic, json.dumps(message).encode(), key=f"K{i}".encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _planned(stats, total: int) -> bool:
    return (await stats())["sends"].get("pending", 0) == total


async def _delivered(stats, total: int) -> dict | None:
    current = await stats()
    return current if current["deliveries"].get("sent") == total else None
