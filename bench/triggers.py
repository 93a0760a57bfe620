"""Event triggers: confirmation latency and reminder dispatch rate, on real Apache Kafka.

    uv run python bench/triggers.py [--quick] [--registrations N] [--rate R] [--reminders M]

1. Latency: the event triggers service and the mass mailer (outbound gateway) run as
   ``faststream run`` processes; a confirmation trigger (a mass mailer template, rendered by the
   gateway with our merge data, plus the .ics) is set up; N registrations (default 10,000) are
   published to crm.registrations at R per second (default 200). Per registration: from its
   publish to the gateway's "sent" delivery event (published right after the relay's 250; the
   relay is Postfix's smtp-sink). ``p99_ms`` is the 99th percentile.
2. Dispatch: the gateway is stopped; M reminders (default 50,000) are seeded as pending sends of
   a "2 days before start" trigger, then the service's clock (a clock file) jumps past their due
   time. ``due_per_s`` = M / time until the last one is published to mail.outbound.transactional.

Last line: ``RESULT p99_ms=... due_per_s=...`` (targets: p99 <= 2000 ms, >= 1,000 due/s).
``--quick``: 1,000 registrations, 5,000 reminders.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import func, insert
from sqlmodel import select

from bench.procstats import cpu_seconds
from services.event_triggers.clock import FileClock
from services.event_triggers.models import Registration, ScheduledSend
from services.event_triggers.rules import correlation_id
from services.mass_mailer.templates import store as template_store
from services.mass_mailer.templates.render import render_design
from shared.db import migrate, session_scope
from shared.secretbox import generate_master_key
from shared.timeutil import as_utc
from tests.mass_mailer.designs import one_column, text
from tests.servers.kafka import KafkaBroker
from tests.servers.procs import free_port
from tests.servers.smtp import PostfixSmtpSink

API_KEY = "msk_benchkey1_0123456789abcdefghij"
AUTH = {"X-API-Key": API_KEY}
PREFIX = "bench."
TEXT = (
    "Hello {{ contact.first_name }}, you are registered for {{ event.name }} on {{ event.start_date }} "
    "at {{ event.start_time }} ({{ event.location }}). Add it to your calendar: {{ links.calendar }}"
)
DESIGN = one_column(text(TEXT))


def seed_template(url: str) -> int:
    migrate("mass_mailer", url)
    rendered = render_design(DESIGN)
    with session_scope(url) as session:
        row = template_store.create_template(
            session, {"name": "Confirmation", "subject": "See you, {{ contact.first_name }}"}, rendered
        )
        return int(row.id)


def start(module: str, env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "faststream", "run", f"services.{module}.app:app", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def until(check, what: str, timeout: float = 120.0, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


async def healthy(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/healthz")).status_code == 200
    except httpx.TransportError:
        return False


async def create_event(client: httpx.AsyncClient, event_id: str, start_at: datetime) -> None:
    body = {
        "kind": "mass_event.created", "event_id": event_id, "event_number": event_id,
        "name": f"Bench summit {event_id}", "start": start_at.isoformat(),
        "end": (start_at + timedelta(hours=8)).isoformat(), "time_zone": "Europe/Berlin",
        "location": "Hall 1",
    }  # fmt: skip
    reply = await client.post("/v1/mass-events", headers=AUTH, json=body)
    reply.raise_for_status()


async def create_trigger(client: httpx.AsyncClient, event_id: str, **spec: object) -> int:
    async def made() -> int | None:
        reply = await client.post(f"/v1/mass-events/{event_id}/triggers", headers=AUTH, json=spec)
        return int(reply.json()["id"]) if reply.status_code == 201 else None

    return await until(made, f"trigger on {event_id} (template catalogue, event)")


async def latency(
    bootstrap: str, client: httpx.AsyncClient, triggers_db: str, template_id: int, count: int, rate: float
) -> float:
    await create_event(client, "L1", datetime.now(UTC) + timedelta(days=30))
    trigger_id = await create_trigger(
        client, "L1", name="confirmation", template_id=template_id, action="registration"
    )
    consumer = AIOKafkaConsumer(
        f"{PREFIX}mail.delivery-events",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    published: dict[str, float] = {}
    arrived: dict[str, float] = {}
    prefix = f"et:{trigger_id}:"

    async def collect() -> None:
        while len(arrived) < count:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for records in batch.values():
                for record in records:
                    event = json.loads(record.value)
                    if event["status"] == "sent" and event["correlation_id"].startswith(prefix):
                        arrived.setdefault(event["correlation_id"][len(prefix) :], now)

    collector = asyncio.create_task(collect())
    try:
        began = time.monotonic()
        for i in range(count):
            await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
            rid = f"L{i}"
            message = {
                "kind": "registration.created", "registration_id": rid, "event_id": "L1",
                "contact_id": f"C{i}",
                "contact": {"email": f"guest{i}@example.test", "first_name": f"Guest{i}"},
                "occurred_at": datetime.now(UTC).isoformat(),
            }  # fmt: skip
            published[rid] = time.time()
            await producer.send(f"{PREFIX}crm.registrations", json.dumps(message).encode(), key=rid.encode())
        print(f"published {count:,} registrations in {time.monotonic() - began:.1f} s")
        await asyncio.wait_for(collector, timeout=300)
    finally:
        collector.cancel()
        await producer.stop()
        await consumer.stop()
    handed = await asyncio.to_thread(handed_over, triggers_db, trigger_id)
    ours = percentiles([(handed[r] - published[r]) * 1000 for r in published if r in handed])
    print(f"registration -> mail published for the gateway: p50 {ours[0]:.0f} ms, p99 {ours[1]:.0f} ms")
    began_at = min(published.values())
    buckets: dict[int, list[float]] = {}
    for r, at in published.items():
        buckets.setdefault(int(at - began_at), []).append((arrived[r] - at) * 1000)
    timeline = " ".join(f"{percentiles(v)[0]:.0f}" for _, v in sorted(buckets.items()))
    print(f"p50 ms per second of publishing: {timeline}")
    p50, p99, worst = percentiles([(arrived[r] - published[r]) * 1000 for r in published])
    print(f"registration -> SMTP accepted: p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {worst:.0f} ms")
    return p99


def percentiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return ordered[len(ordered) // 2], ordered[max(0, int(len(ordered) * 0.99) - 1)], ordered[-1]


def handed_over(url: str, trigger_id: int) -> dict[str, float]:
    """When each confirmation was published to Kafka (sent_at: marked right after the ack)."""
    with session_scope(url) as session:
        rows = session.exec(
            select(ScheduledSend.registration_id, ScheduledSend.sent_at).where(
                ScheduledSend.trigger_id == trigger_id
            )
        ).all()
    return {r: as_utc(at).timestamp() for r, at in rows if at is not None}


def seed_reminders(url: str, trigger_id: int, event_id: str, due: datetime, count: int) -> None:
    now = datetime.now(UTC)
    with session_scope(url) as session:
        for offset in range(0, count, 5_000):
            ids = [f"B{i}" for i in range(offset, min(count, offset + 5_000))]
            session.execute(
                insert(Registration),
                [
                    {"registration_id": r, "event_id": event_id, "contact_id": r,
                     "email": f"{r.lower()}@example.test", "contact": {"first_name": r},
                     "role": "participant", "status": "registered", "answers": {}, "answered": False,
                     "updated_at": now, "created_at": now}
                    for r in ids
                ],
            )  # fmt: skip
            session.execute(
                insert(ScheduledSend),
                [
                    {"trigger_id": trigger_id, "registration_id": r, "event_id": event_id, "due_at": due,
                     "status": "pending", "correlation_id": correlation_id(trigger_id, r),
                     "created_at": now, "updated_at": now}
                    for r in ids
                ],
            )  # fmt: skip


def sent_count(url: str, trigger_id: int) -> int:
    with session_scope(url) as session:
        query = select(func.count()).where(
            ScheduledSend.trigger_id == trigger_id, ScheduledSend.status == "sent"
        )
        return int(session.exec(query).one())


async def dispatch_rate(
    client: httpx.AsyncClient, url: str, template_id: int, clock_file: Path, now: datetime, count: int
) -> float:
    start_at = now + timedelta(days=10)
    await create_event(client, "B1", start_at)
    trigger_id = await create_trigger(
        client, "B1", name="reminder", template_id=template_id, action="before_start", offset_value=2
    )
    seed_reminders(url, trigger_id, "B1", start_at - timedelta(days=2), count)
    print(f"seeded {count:,} pending reminders")
    began = time.monotonic()
    FileClock.write(clock_file, start_at - timedelta(days=1))
    while (done := await asyncio.to_thread(sent_count, url, trigger_id)) < count:
        if time.monotonic() - began > 600:
            raise SystemExit(f"only {done:,} of {count:,} reminders dispatched in 600 s")
        await asyncio.sleep(0.1)
    elapsed = time.monotonic() - began
    print(f"{count:,} due reminders dispatched in {elapsed:.1f} s")
    return count / elapsed


async def run(args: argparse.Namespace) -> tuple[float, float]:
    work = Path(tempfile.mkdtemp(prefix="bench-triggers-"))
    clock_file = work / "clock.txt"
    now = datetime.now(UTC).replace(microsecond=0)
    FileClock.write(clock_file, now)
    with KafkaBroker() as kafka, PostfixSmtpSink(count=True) as sink:
        env = {
            **os.environ,
            "MAILSVC_DATA_DIR": str(work / "var"),
            "MAILSVC_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "MAILSVC_KAFKA_TOPIC_PREFIX": PREFIX,
            "MAILSVC_KAFKA_GROUP_PREFIX": "bench",
            "MAILSVC_KAFKA_PARTITIONS": "6",
            "MAILSVC_SMTP_HOST": sink.host,
            "MAILSVC_SMTP_PORT": str(sink.port),
            "MAILSVC_MASTER_KEY": generate_master_key(),
            "MAILSVC_BOOTSTRAP_API_KEY": API_KEY,
            "MAILSVC_LOG_LEVEL": "WARNING",
            "MAILSVC_MAIL_DOMAIN": "bench.example.test",
            "MAILSVC_DEFAULT_SENDER": "events@bench.example.test",
            "MAILSVC_EVENT_TRIGGERS_CLOCK_FILE": str(clock_file),
            "MAILSVC_EVENT_TRIGGERS_SCHEDULER_INTERVAL_S": "0.5",
        }
        env.pop("MAILSVC_DATABASE_URL", None)
        mailer_db = f"sqlite:///{work / 'var' / 'mass_mailer.db'}"
        triggers_db = f"sqlite:///{work / 'var' / 'event_triggers.db'}"
        template_id = seed_template(mailer_db)
        ports = {"mass_mailer": free_port(), "event_triggers": free_port()}
        procs = {name: start(name, env, port, work / f"{name}.log") for name, port in ports.items()}
        try:
            async with (
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{ports['event_triggers']}", timeout=30
                ) as triggers,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['mass_mailer']}", timeout=30) as mailer,
            ):
                await until(lambda: healthy(triggers), "event triggers service")
                await until(lambda: healthy(mailer), "mass mailer")
                spies = (
                    [profile(proc.pid, f"{args.py_spy}.{name}.txt") for name, proc in procs.items()]
                    if args.py_spy
                    else []
                )
                cpu_before = {name: cpu_seconds(proc.pid) for name, proc in procs.items()}
                try:
                    p99 = await latency(
                        kafka.bootstrap, triggers, triggers_db, template_id, args.registrations, args.rate
                    )
                finally:
                    for spy in spies:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(timeout=60)
                for name, proc in procs.items():
                    used = cpu_seconds(proc.pid) - cpu_before[name]
                    each = used / args.registrations * 1000
                    print(f"{name}: CPU {used:.1f} s = {each:.2f} ms per registration")
                print(f"smtp-sink counted {sink.received():,} messages")
                procs["mass_mailer"].send_signal(signal.SIGTERM)  # part 2 measures dispatch only
                procs["mass_mailer"].wait(timeout=60)
                rate = await dispatch_rate(
                    triggers, triggers_db, template_id, clock_file, now, args.reminders
                )
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    return p99, rate


def profile(pid: int, path: str) -> subprocess.Popen[bytes]:
    """py-spy (collapsed stacks, GIL holders only) of a service while the latency part runs."""
    py_spy = shutil.which("py-spy") or os.path.expanduser("~/.local/bin/py-spy")
    command = [
        py_spy,
        "record",
        "-p",
        str(pid),
        "-o",
        path,
        "--nonblocking",
        "--format",
        "raw",
        "--gil",
        "--rate",
        "400",
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--registrations", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200.0, help="registrations per second")
    parser.add_argument("--reminders", type=int, default=50_000)
    parser.add_argument("--quick", action="store_true", help="1,000 registrations, 5,000 reminders")
    parser.add_argument("--py-spy", help="profile both services during part 1 into PREFIX.<service>.txt")
    args = parser.parse_args()
    if args.quick:
        args.registrations, args.reminders = 1_000, 5_000
    p99, rate = asyncio.run(run(args))
    print(f"RESULT p99_ms={p99:.0f} due_per_s={rate:.0f}")


if __name__ == "__main__":
    main()
