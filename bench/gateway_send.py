"""Transactional gateway: throughput and latency of single mails, through real Apache Kafka.

    uv run python bench/gateway_send.py [--messages N] [--rate R] [--py-spy PATH]

The mass mailer service (the real one: ``faststream run services.mass_mailer.app:app``, SQLite)
runs as its own process with an RSA-2048 DKIM key and Postfix's smtp-sink as the relay. N
confirmation-like mails (HTML + text, ~3 KB, an .ics attachment, one recipient each) are
published to ``mail.outbound.transactional`` at R per second (0 = all at once); per mail the
latency runs from its publish to the gateway's ``sent`` delivery event. ``--py-spy PATH`` records
a flame graph of the service while it works (SVG; any other suffix: collapsed stacks).

Last line: ``RESULT msgs_per_s=... p50_ms=... p99_ms=... rate=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.procstats import cpu_seconds
from services.mass_mailer.models import DkimKeyRecord, SenderIdentity
from shared.db import migrate, session_scope
from shared.mail.dkim import DkimAlgorithm, generate_key
from shared.secretbox import SecretBox, generate_master_key
from shared.settings import Settings
from tests.servers.kafka import KafkaBroker
from tests.servers.procs import free_port
from tests.servers.smtp import PostfixSmtpSink

PREFIX = "gwbench."
PY_SPY = shutil.which("py-spy") or os.path.expanduser("~/.local/bin/py-spy")
ICS = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//mailsvc bench//EN\r\nMETHOD:REQUEST\r\n"
    "BEGIN:VEVENT\r\nUID:event-42@example.com\r\nDTSTART:20261201T090000Z\r\n"
    "DTEND:20261201T170000Z\r\nSUMMARY:Workshop\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def seed(url: str, settings: Settings, sink_port: int) -> None:
    migrate("mass_mailer", url)
    key = generate_key("example.com", "bench", DkimAlgorithm.RSA)
    with session_scope(url) as session:
        session.add(
            DkimKeyRecord(
                domain="example.com",
                selector="bench",
                algorithm="rsa",
                private_key=SecretBox.from_settings(settings).encrypt(key.private_pem),
            )
        )
        session.add(
            SenderIdentity(
                name="Events",
                email="events@example.com",
                relay_host="127.0.0.1",
                relay_port=sink_port,
                relay_tls="none",
                pool_size=8,
                dkim_domain="example.com",
                is_default=True,
            )
        )


def mail(tag: str, i: int) -> dict[str, object]:
    paragraph = "Thank you for registering. Here is everything you need for the day. " * 12
    return {
        "message_id": str(uuid.uuid4()),
        "correlation_id": f"{tag}-{i}",
        "sender_identity": "Events",
        "to": [f"guest{i}@example.net"],
        "subject": f"Your registration {i} is confirmed",
        "text": f"Hello Guest {i},\n\n{paragraph}\n",
        "html": f"<html><body><p>Hello <b>Guest {i}</b>,</p><p>{paragraph}</p></body></html>",
        "attachments": [
            {
                "filename": "invite.ics",
                "content_type": "text/calendar",
                "content_b64": base64.b64encode(ICS.encode()).decode(),
            }
        ],
        "source": "bench",
    }


async def measure(bootstrap: str, tag: str, count: int, rate: float) -> tuple[float, list[float]]:
    consumer = AIOKafkaConsumer(
        f"{PREFIX}mail.delivery-events", bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    published: dict[str, float] = {}
    arrived: dict[str, float] = {}

    async def collect() -> None:
        while len(arrived) < count:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for records in batch.values():
                for record in records:
                    event = json.loads(record.value)
                    if not event["correlation_id"].startswith(f"{tag}-"):
                        continue
                    if event["status"] == "sent":
                        arrived.setdefault(event["correlation_id"], now)
                    elif event["status"] != "sent":
                        print(
                            f"unexpected: {event['correlation_id']} {event['status']} {event.get('reason')}"
                        )

    collector = asyncio.create_task(collect())
    try:
        began = time.monotonic()
        for i in range(count):
            if rate > 0:
                await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
            published[f"{tag}-{i}"] = time.monotonic()
            await producer.send(
                f"{PREFIX}mail.outbound.transactional",
                json.dumps(mail(tag, i)).encode(),
                key=f"{tag}-{i}".encode(),
            )
        await producer.flush()
        await asyncio.wait_for(collector, timeout=600)
        elapsed = max(arrived.values()) - began
    finally:
        collector.cancel()
        await producer.stop()
        await consumer.stop()
    return elapsed, sorted((arrived[k] - published[k]) * 1000 for k in published)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--rate", type=float, default=0, help="publish rate per second (0 = all at once)")
    parser.add_argument("--concurrency", type=int, default=None, help="MAILSVC_GATEWAY_CONCURRENCY")
    parser.add_argument("--py-spy", help="record a flame graph of the service into PATH (SVG)")
    parser.add_argument("--gil", action="store_true", help="py-spy: only samples holding the GIL")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gwbench-"))
    master = generate_master_key()
    url = f"sqlite:///{work / 'mm.db'}"
    service: subprocess.Popen[bytes] | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        with KafkaBroker() as kafka, PostfixSmtpSink(count=True) as sink:
            settings = Settings(master_key=master, data_dir=work)  # type: ignore[call-arg]
            seed(url, settings, sink.port)
            port = free_port()
            env = {
                **os.environ,
                "MAILSVC_DATA_DIR": str(work),
                "MAILSVC_DATABASE_URL": url,
                "MAILSVC_KAFKA_BOOTSTRAP": kafka.bootstrap,
                "MAILSVC_KAFKA_TOPIC_PREFIX": PREFIX,
                "MAILSVC_MASTER_KEY": master,
                "MAILSVC_MAIL_DOMAIN": "mail.example.com",
                "MAILSVC_LOG_LEVEL": "WARNING",
            }
            if args.concurrency:
                env["MAILSVC_GATEWAY_CONCURRENCY"] = str(args.concurrency)
            service = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "faststream",
                    "run",
                    "services.mass_mailer.app:app",
                    "--port",
                    str(port),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(work / "service.log", "wb"),
            )
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if service.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the service did not start; see {work / 'service.log'}")
                time.sleep(0.3)
            asyncio.run(measure(kafka.bootstrap, "warm", 20, 0))  # warm-up: consumer group, pools, DKIM key
            if args.py_spy:
                spy = subprocess.Popen(
                    [PY_SPY, "record", "-p", str(service.pid), "-o", args.py_spy, "--nonblocking"]
                    + ([] if args.py_spy.endswith(".svg") else ["--format", "raw"])
                    + (["--gil"] if args.gil else []),
                    stdout=subprocess.DEVNULL,
                )
            cpu_before = cpu_seconds(service.pid)
            elapsed, latencies = asyncio.run(measure(kafka.bootstrap, "gw", args.messages, args.rate))
            cpu = cpu_seconds(service.pid) - cpu_before
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=60)
        if service is not None:
            service.terminate()
            service.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    n = len(latencies)
    p50, p99 = latencies[n // 2], latencies[max(0, int(n * 0.99) - 1)]
    load = os.getloadavg()[0]
    print(f"{n} mails in {elapsed:.1f} s; service CPU {cpu:.1f} s; load average {load:.1f}")
    print(f"RESULT msgs_per_s={n / elapsed:.0f} p50_ms={p50:.0f} p99_ms={p99:.0f} rate={args.rate:g}")


if __name__ == "__main__":
    main()
