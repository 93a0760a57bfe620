"""Mail scanner import throughput and IMAP IDLE latency, through real Dovecot and Apache Kafka.

    uv run python bench/scan_import.py [--messages N | --quick] [--idle-samples 50] [--postgres]

N mixed messages (generated plain/HTML/attachment/reply mails, plus every .eml of
../shared/corpus when present, cycled) are APPENDed (MULTIAPPEND) to a Dovecot folder; then
the scanner (the real service, ``faststream run``, SQLite) gets the account activated, and the
clock runs until every message is handled (the folder checkpoint reaches the last UID):
``msgs_per_s`` = N / that time, ``tickets`` = tickets created (duplicates, bounces and
auto-replies from the corpus create none). Then 50 single APPENDs, one every 0.3 s, with the
scanner IDLE: ``idle_p95_ms`` = 95th percentile from APPEND to the ``ticket.created`` event on
Kafka. Last lines: ``RESULT msgs_per_s=... tickets=...`` and ``RESULT idle_p95_ms=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer
from cryptography.fernet import Fernet
from imapclient import IMAPClient
from sqlalchemy import func
from sqlmodel import select

from services.mail_scanner import accounts
from services.mail_scanner.models import FolderCheckpoint, ScannerAccount, Ticket
from shared.db import migrate, session_scope
from shared.secretbox import SecretBox
from tests.servers.dovecot import DovecotServer
from tests.servers.kafka import KafkaBroker
from tests.servers.postgres import PostgresServer
from tests.servers.procs import free_port

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
FOLDER = "bench"


def generated(i: int, rng: random.Random) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {i} <customer{i % 997}@example.org>"
    msg["To"] = "support@helpdesk.example.test"
    if i % 5 == 0:
        msg["Cc"] = f"colleague{i % 31}@example.org"
    msg["Subject"] = f"{'Re: ' if i % 7 == 0 else ''}Problem report {i}"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<bench-{i}-{uuid.uuid4().hex}@example.org>"
    body = f"Hello,\n\nissue number {i}: " + " ".join(
        rng.choice(["printer", "broken", "please", "help", "today", "urgent"]) for _ in range(80)
    )
    if i % 7 == 0:
        body += "\n\nOn Monday support wrote:\n> earlier text\n> more quoted text\n"
    msg.set_content(body + "\n\n-- \nCustomer\n")
    if i % 3 == 0:
        msg.add_alternative(f"<html><body><p>{body}</p><p><b>bold</b></p></body></html>", subtype="html")
    if i % 10 == 0:
        msg.add_attachment(
            rng.randbytes(20_000), maintype="application", subtype="pdf", filename=f"report-{i}.pdf"
        )
    return msg.as_bytes()


def corpus() -> list[bytes]:
    if not CORPUS.is_dir():
        return []
    return [p.read_bytes() for p in sorted(CORPUS.rglob("*.eml")) if p.stat().st_size < 2_000_000]


def imap(dovecot: DovecotServer) -> IMAPClient:
    client = IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False, timeout=120)
    client.login("alice", dovecot.users["alice"])
    return client


def handled(database_url: str, account_id: int, last_uid: int) -> bool:
    with session_scope(database_url) as session:
        rows = session.exec(select(FolderCheckpoint).where(FolderCheckpoint.account_id == account_id)).all()
        return any(r.last_uid >= last_uid for r in rows)


def ticket_count(database_url: str) -> int:
    with session_scope(database_url) as session:
        return session.exec(select(func.count()).select_from(Ticket)).one()


async def idle_latency(dovecot: DovecotServer, bootstrap: str, topic: str, samples: int) -> list[float]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="latest", group_id=None)
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=500)
        await asyncio.sleep(1.0)
        sent: dict[str, float] = {}
        latencies: list[float] = []
        client = imap(dovecot)
        for n in range(samples):
            subject = f"idle probe {n} {uuid.uuid4().hex[:6]}"
            msg = EmailMessage()
            msg["From"] = f"probe{n}@example.org"
            msg["To"] = "support@helpdesk.example.test"
            msg["Subject"] = subject
            msg["Message-ID"] = f"<probe-{uuid.uuid4().hex}@example.org>"
            msg.set_content("probe\n")
            sent[subject] = time.monotonic()
            client.append(FOLDER, msg.as_bytes())
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline or (len(latencies) <= n and time.monotonic() < deadline + 10):
                batch = await consumer.getmany(timeout_ms=50)
                for records in batch.values():
                    for record in records:
                        event = json.loads(record.value)
                        if event["kind"] == "ticket.created" and event["subject"] in sent:
                            latencies.append((time.monotonic() - sent.pop(event["subject"])) * 1000)
        client.logout()
        return latencies
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 messages, 20 IDLE samples")
    parser.add_argument("--idle-samples", type=int, default=50)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    total = 1_000 if args.quick else args.messages
    samples = 20 if args.quick else args.idle_samples
    rng = random.Random(7)
    real = corpus()
    mails = []
    from_corpus = 0
    for i in range(total):
        if real and i % 4 == 3:
            mails.append(real[(i // 4) % len(real)])
            from_corpus += 1
        else:
            mails.append(generated(i, rng))
    print(f"{total} messages ({from_corpus} from the corpus), {sum(map(len, mails)) / 1e6:.1f} MB")

    work = Path(tempfile.mkdtemp(prefix="scanbench-"))
    master = Fernet.generate_key().decode()
    with contextlib.ExitStack() as stack:
        kafka = stack.enter_context(KafkaBroker())
        dovecot = stack.enter_context(DovecotServer())
        postgres = stack.enter_context(PostgresServer()) if args.postgres else None
        client = imap(dovecot)
        client.create_folder(FOLDER)
        started = time.monotonic()
        for start in range(0, total, 200):
            client.multiappend(FOLDER, mails[start : start + 200])
        client.select_folder(FOLDER, readonly=True)
        last_uid = max(client.search("ALL"))
        client.logout()
        print(f"appended in {time.monotonic() - started:.1f} s")

        database_url = postgres.create_database() if postgres else f"sqlite:///{work / 'scanner.db'}"
        migrate("mail_scanner", database_url)
        with session_scope(database_url) as session:
            data = accounts.AccountIn(
                name="bench", host=dovecot.host, port=dovecot.imap_port, encryption="none",
                username="alice", password=dovecot.users["alice"], folders=[FOLDER],
            )  # fmt: skip
            account_id = accounts.create(session, SecretBox.from_string(master), data).id
        env = {
            **os.environ,
            "MAILSVC_DATA_DIR": str(work / "var"),
            "MAILSVC_DATABASE_URL": database_url,
            "MAILSVC_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "MAILSVC_MASTER_KEY": master,
            "MAILSVC_SCANNER_CLAIM_INTERVAL_S": "0.2",
            "MAILSVC_LOG_LEVEL": "WARNING",
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "faststream",
                "run",
                "services.mail_scanner.app:app",
                "--port",
                str(free_port()),
            ],
            env=env,
        )
        try:
            time.sleep(4)  # service start-up (imports, Kafka), not part of the measurement
            with session_scope(database_url) as session:
                row = session.get(ScannerAccount, account_id)
                row.active = True
                session.add(row)
            began = time.monotonic()
            while not handled(database_url, account_id, last_uid):
                if proc.poll() is not None:
                    raise SystemExit("the scanner died")
                time.sleep(0.05)
            elapsed = time.monotonic() - began
            tickets = ticket_count(database_url)
            print(f"imported {total} in {elapsed:.1f} s")
            latencies = asyncio.run(idle_latency(dovecot, kafka.bootstrap, "helpdesk.ticket-events", samples))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    p95 = statistics.quantiles(latencies, n=20)[-1] if len(latencies) >= 2 else float("nan")
    print(f"IDLE samples: {len(latencies)} of {samples}, median {statistics.median(latencies):.0f} ms")
    print(f"RESULT msgs_per_s={total / elapsed:.0f} tickets={tickets} seconds={elapsed:.1f}")
    print(f"RESULT idle_p95_ms={p95:.0f}")


if __name__ == "__main__":
    main()
