"""Mail scanner import throughput and IMAP IDLE latency, through real Dovecot and Apache Kafka.

    uv run python bench/scan_import.py [--messages N | --quick] [--idle-samples 50] [--postgres]
                                       [--no-idle] [--json]

N mixed messages (generated plain/HTML/attachment/reply mails, plus every .eml of
../shared/corpus when present, cycled) are APPENDed (MULTIAPPEND) to a Dovecot folder; then
the scanner (the real service, ``faststream run``, SQLite) gets the account activated, and the
clock runs until every message is handled (the folder checkpoint reaches the last UID):
``msgs_per_s`` = N / that time, ``tickets`` = tickets created (duplicates, bounces and
auto-replies from the corpus create none), ``cpu_ms_per_msg`` = CPU time of the scanner process
and its parse workers per message (Dovecot and Kafka not included; unlike wall time, hardly
changed by other load on the machine). Then, once the import's events are all published
(``drain_s`` after the import), 50 single APPENDs, one every 0.3 s, with the scanner IDLE:
``idle_p95_ms`` = 95th percentile from APPEND to the ``ticket.created`` event on Kafka.
Last lines: ``RESULT msgs_per_s=... tickets=...`` and ``RESULT idle_p95_ms=...``.

``--json`` (what bench/compare.py runs: ``python -m bench.scan_import --messages N --json``)
imports issue 7's shared workload instead, the very folder django-helpdesk gets
(``bench.peers.workload.inbox_workload``, APPENDed one by one like ``imapfill``), with our
ticket tag ``[TT1001]`` in the subject of the "subject" follow-ups, skips the IDLE part (unless
``--idle-samples`` is given) and prints as its last line a JSON object: ``msgs_per_s``,
``seconds``, ``tickets``, ``cpu_ms_per_msg``, ``followups_ok`` / ``followups_total``
(follow-ups whose token landed in a comment of the ticket holding their original's token,
checked in the database) and the same per kind. ``tag(k)`` is the number a fresh scanner
gives the k-th new ticket (prefix + ticket start + ticket id; the generated originals come
first and each opens one ticket, in UID order); ``numbering_ok`` counts the originals whose
ticket really has that number, so a different numbering would show instead of being assumed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import re
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

from bench.peers import imapfill, workload
from services.mail_scanner import accounts
from services.mail_scanner.models import FolderCheckpoint, ScannerAccount, Ticket, TicketComment
from shared.db import migrate, session_scope
from shared.outbox import OutboxEvent
from shared.secretbox import SecretBox
from shared.settings import Settings
from tests.servers.dovecot import DovecotServer
from tests.servers.kafka import KafkaBroker
from tests.servers.postgres import PostgresServer
from tests.servers.procs import free_port

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
FOLDER = "bench"
TOKEN = re.compile(r"bench-token: ([OF][0-9]+)")


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


@functools.lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings()


def our_tag(ticket: int) -> str:
    """Our ticket tag for the k-th ticket of a fresh scanner (as in our reply subjects)."""
    settings = _settings()
    return f"[{settings.scanner_ticket_prefix}{settings.scanner_ticket_start + ticket}]"


def followups(database_url: str, wl: workload.InboxWorkload) -> dict[str, object]:
    """Follow-up correctness, from the database: the ticket holding a follow-up's token in a
    comment must be the one holding its original's token."""
    ticket_of: dict[str, int] = {}
    number_of: dict[int, str] = {}
    with session_scope(database_url) as session:
        for ticket_id, text in session.exec(select(TicketComment.ticket_id, TicketComment.text)).all():
            for token in TOKEN.findall(text or ""):
                ticket_of.setdefault(token, ticket_id)
        for ticket_id, number in session.exec(select(Ticket.id, Ticket.number)).all():
            number_of[ticket_id] = number or ""
    figures: dict[str, object] = {}
    ok_all = 0
    for kind in workload.FOLLOWUP_KINDS:
        mine = [f for f in wl.followups if f.kind == kind]
        ok = sum(
            1
            for f in mine
            if ticket_of.get(wl.originals[f.original]) is not None
            and ticket_of.get(f.token) == ticket_of.get(wl.originals[f.original])
        )
        ok_all += ok
        figures[f"followups_{kind.replace('-', '_')}"] = f"{ok}/{len(mine)}"
    rank = {position: k for k, position in enumerate(sorted(wl.originals), start=1)}  # = wl.ticket_rank
    numbered = sum(
        1
        for position, token in wl.originals.items()
        if token in ticket_of and f"[{number_of.get(ticket_of[token])}]" == our_tag(rank[position])
    )
    return {
        "followups_ok": ok_all,
        "followups_total": len(wl.followups),
        **figures,
        "originals_found": sum(1 for token in wl.originals.values() if token in ticket_of),
        "numbering_ok": f"{numbered}/{len(wl.originals)}",
    }


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children (the parse workers), from /proc:
    a figure the other load on the machine does not distort the way it does wall time."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def outbox_pending(database_url: str) -> int:
    with session_scope(database_url) as session:
        return session.exec(select(func.count()).select_from(OutboxEvent)).one()


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
            while time.monotonic() < deadline or (subject in sent and time.monotonic() < deadline + 10):
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
    parser.add_argument("--idle-samples", type=int, default=None, help="IDLE probes (default 50, --quick 20)")
    parser.add_argument("--no-idle", action="store_true", help="measure the import only")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument(
        "--json",
        action="store_true",
        help="issue 7's shared workload; last line a JSON object (no IDLE part)",
    )
    args = parser.parse_args()
    total = 1_000 if args.quick else args.messages
    samples = args.idle_samples if args.idle_samples is not None else (20 if args.quick else 50)
    if args.no_idle or (args.json and args.idle_samples is None):
        samples = 0
    wl: workload.InboxWorkload | None = None
    if args.json:
        wl = workload.inbox_workload(total, workload.find_corpus(REPO), our_tag)
        mails = wl.messages
        from_corpus = len(wl.corpus)
    else:
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
    latencies: list[float] = []
    drained = 0.0
    drained = 0.0
    with contextlib.ExitStack() as stack:
        kafka = stack.enter_context(KafkaBroker())
        dovecot = stack.enter_context(DovecotServer())
        postgres = stack.enter_context(PostgresServer()) if args.postgres else None
        started = time.monotonic()
        if wl is not None:  # exactly as the peer's folder is filled: one APPEND each, in order
            imapfill.fill_folder(
                dovecot.host, dovecot.imap_port, "alice", dovecot.users["alice"], mails, FOLDER
            )
        else:
            client = imap(dovecot)
            client.create_folder(FOLDER)
            for start in range(0, total, 200):
                client.multiappend(FOLDER, mails[start : start + 200])
            client.logout()
        client = imap(dovecot)
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
            stdout=subprocess.DEVNULL if args.json else None,
            stderr=subprocess.DEVNULL if args.json else None,
        )
        try:
            time.sleep(4)  # service start-up (imports, Kafka), not part of the measurement
            with session_scope(database_url) as session:
                row = session.get(ScannerAccount, account_id)
                row.active = True
                session.add(row)
            began = time.monotonic()
            cpu_before = cpu_seconds(proc.pid)
            while not handled(database_url, account_id, last_uid):
                if proc.poll() is not None:
                    raise SystemExit("the scanner died")
                time.sleep(0.05)
            elapsed = time.monotonic() - began
            cpu = cpu_seconds(proc.pid) - cpu_before
            tickets = ticket_count(database_url)
            backlog = outbox_pending(database_url)
            print(f"imported {total} in {elapsed:.1f} s; {backlog} events still to publish")
            if samples:  # IDLE latency of an idle scanner: once the events of the import are out
                drain = time.monotonic()
                while outbox_pending(database_url) and time.monotonic() - drain < 600:
                    time.sleep(0.1)
                drained = time.monotonic() - drain
                print(f"outbox drained {drained:.1f} s after the import")
                latencies = asyncio.run(
                    idle_latency(dovecot, kafka.bootstrap, "helpdesk.ticket-events", samples)
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        checked = followups(database_url, wl) if wl is not None else {}
    load = os.getloadavg()[0]
    print(
        f"RESULT msgs_per_s={total / elapsed:.0f} tickets={tickets} seconds={elapsed:.1f} "
        f"cpu_ms_per_msg={1000 * cpu / total:.2f} load1={load:.2f}"
    )
    p95: float | None = None
    if samples:
        p95 = statistics.quantiles(latencies, n=20)[-1] if len(latencies) >= 2 else float("nan")
        median = statistics.median(latencies) if latencies else float("nan")
        print(f"IDLE samples: {len(latencies)} of {samples}, median {median:.0f} ms")
        print(f"RESULT idle_p95_ms={p95:.0f} drain_s={drained:.1f}")
    if args.json:
        figures = {
            "msgs_per_s": round(total / elapsed, 1),
            "seconds": round(elapsed, 2),
            "messages": total,
            "tickets": tickets,
            **checked,
            "cpu_ms_per_msg": round(1000 * cpu / total, 2),
            "load1": round(load, 2),
        }
        if p95 is not None:
            figures["idle_p95_ms"] = round(p95)
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
