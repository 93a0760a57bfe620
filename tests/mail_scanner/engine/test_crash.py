"""Acceptance: the scanner SIGKILLed at random moments, restarted, and the folder deleted and
re-created (new UIDVALIDITY) with the same mails: every mail is exactly one ticket and one
``ticket.created`` event (deduplicated on the event's message_id, as consumers do)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from services.mail_scanner import accounts
from services.mail_scanner.models import Ticket
from shared.db import migrate, session_scope
from shared.outbox import OutboxEvent
from shared.secretbox import SecretBox
from shared.settings import Settings
from tests.integration.harness import consume
from tests.mail_scanner.engine.helpers import MASTER_KEY, account_body, append, imap, mail
from tests.servers.procs import free_port

pytestmark = pytest.mark.timeout(900)


def start_scanner(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen(
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
        stdout=handle,
        stderr=subprocess.STDOUT,
    )


def scanner_env(kafka_broker, unique, data_dir: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "MAILSVC_DATA_DIR": str(data_dir),
        "MAILSVC_DATABASE_URL": database_url,
        "MAILSVC_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "MAILSVC_KAFKA_TOPIC_PREFIX": unique.prefix,
        "MAILSVC_KAFKA_GROUP_PREFIX": unique.id,
        "MAILSVC_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "MAILSVC_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "MAILSVC_MASTER_KEY": MASTER_KEY,
        "MAILSVC_SCANNER_LEASE_S": "2",
        "MAILSVC_SCANNER_CLAIM_INTERVAL_S": "0.2",
        "MAILSVC_SCANNER_POLL_INTERVAL_S": "0.5",
        "MAILSVC_SCANNER_BATCH_SIZE": "10",
        "MAILSVC_MAIL_DOMAIN": "helpdesk.example.test",
    }
    env.update(extra)
    return env


def setup_accounts(database_url: str, dovecot, folders: list[str]) -> list[int]:
    migrate("mail_scanner", database_url)
    box = SecretBox.from_string(MASTER_KEY)
    ids = []
    with session_scope(database_url) as session:
        for folder in folders:
            row = accounts.create(session, box, accounts.AccountIn(**account_body(dovecot, folder)))
            row.active = True
            ids.append(row.id)
    return ids


def count_tickets(database_url: str) -> int:
    with session_scope(database_url) as session:
        return session.exec(select(func.count()).select_from(Ticket)).one()


def pending_events(database_url: str) -> int:
    with session_scope(database_url) as session:
        return session.exec(select(func.count()).select_from(OutboxEvent)).one()


def all_seen(dovecot, folder: str) -> bool:
    with imap(dovecot) as client:
        client.select_folder(folder, readonly=True)
        return not client.search("UNSEEN")


async def created_events(kafka_broker, settings: Settings, expected: int) -> dict[int, set[str]]:
    records = await consume(
        kafka_broker.bootstrap, settings.topic("helpdesk.ticket-events"), expected, timeout=60
    )
    deadline = time.monotonic() + 3  # give duplicates (if any) the chance to show up too
    while time.monotonic() < deadline:
        more = await consume(
            kafka_broker.bootstrap, settings.topic("helpdesk.ticket-events"), len(records) + 1, timeout=1
        )
        if len(more) <= len(records):
            break
        records = more
    by_ticket: dict[int, set[str]] = {}
    for record in records:
        event = json.loads(record.value)
        if event["kind"] == "ticket.created":
            by_ticket.setdefault(event["ticket_id"], set()).add(event["message_id"])
    return by_ticket


async def wait_for(
    check, timeout: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"scanner died: {log.read_text()[-3000:] if log else ''}")
        assert time.monotonic() < deadline, (
            f"not done in {timeout}s: {log.read_text()[-3000:] if log else ''}"
        )
        await asyncio.sleep(0.1)


async def crash_run(kafka_broker, dovecot, unique, tmp_path: Path, total: int, kills: int) -> None:
    rng = random.Random()
    folder = f"crash-{unique.id}"
    with imap(dovecot) as client:
        client.create_folder(folder)
    messages = [
        mail(sender=f"user{i}@example.org", subject=f"Problem {i}", body=f"Mail number {i}\n")
        for i in range(total)
    ]
    append(dovecot, folder, *messages)
    database_url = f"sqlite:///{tmp_path / 'scanner.db'}"
    setup_accounts(database_url, dovecot, [folder])
    env = scanner_env(kafka_broker, unique, tmp_path / "var", database_url)
    log = tmp_path / "scanner.log"
    recreated = False
    for round_ in range(kills):
        proc = start_scanner(env, log)
        try:
            before = count_tickets(database_url)
            await wait_for(
                lambda before=before: (
                    count_tickets(database_url) > before or count_tickets(database_url) >= total
                ),
                120,
                proc,
                log,
            )
            await asyncio.sleep(rng.uniform(0, 0.4))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if not recreated and (round_ >= kills // 2 or count_tickets(database_url) >= total):
            recreated = True
            with imap(dovecot) as client:  # same mails, new UIDVALIDITY
                client.delete_folder(folder)
                client.create_folder(folder)
            append(dovecot, folder, *messages)
    assert recreated
    proc = start_scanner(env, log)
    try:
        await wait_for(
            lambda: (
                count_tickets(database_url) >= total
                and pending_events(database_url) == 0
                and all_seen(dovecot, folder)
            ),
            300,
            proc,
            log,
        )
        await asyncio.sleep(1.0)  # a duplicate import would show up now
        assert count_tickets(database_url) == total
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    settings = Settings(kafka_topic_prefix=unique.prefix)
    events = await created_events(kafka_broker, settings, total)
    assert len(events) == total
    assert all(len(ids) == 1 for ids in events.values())
    with session_scope(database_url) as session:
        subjects = session.exec(select(Ticket.subject)).all()
        assert sorted(subjects) == sorted(f"Problem {i}" for i in range(total))


async def test_sigkill_and_uidvalidity_change_import_every_mail_once(kafka_broker, dovecot, unique, tmp_path):
    await crash_run(kafka_broker, dovecot, unique, tmp_path, total=300, kills=5)


@pytest.mark.soak
async def test_soak_2000_mails_five_kills(kafka_broker, dovecot, unique, tmp_path):
    await crash_run(kafka_broker, dovecot, unique, tmp_path, total=2000, kills=5)
