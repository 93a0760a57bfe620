"""The mass mailer as a real process (``faststream run``) for the mailing fault tests, and the API
calls that set a mailing up: DKIM key, sender identity on a given relay, template, contacts,
target group, a mailing scheduled a moment ahead.

A process rather than in-process: the test blocks while it stops and starts Kafka or PostgreSQL,
and the service must survive the outage the way an operator runs it.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from shared.secretbox import generate_master_key
from tests.integration.harness import API_KEY, AUTH
from tests.mass_mailer.engine.conftest import DESIGN, SUBJECT, contacts_csv
from tests.servers.procs import free_port, tail

MEMBERS_PER_CALL = 10_000  # the target-group members API takes at most this many ids at once
FINAL = {"sent", "failed", "bounced", "complained", "opened", "unsubscribed"}


def recipients(count: int) -> list[str]:
    """The addresses contacts_csv(count) creates."""
    return [f"r{i:05d}@example.org" for i in range(count)]


@dataclass
class MailerProcess:
    """One ``faststream run`` of the mass mailer with the mailing engine; output in ``log_path``."""

    env: dict[str, str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "faststream",
                    "run",
                    "tests.mass_mailer.engine.wiring:app",
                    "--port",
                    str(self.port),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    async def ready(self, client: httpx.AsyncClient, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.alive, f"the mass mailer died at start:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"the mass mailer did not become ready:\n{self.log_tail()}"
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)


def mailer_env(bootstrap: str, unique: Any, tmp_path: Path, **settings: object) -> dict[str, str]:
    """Environment of a mass mailer process; ``settings`` are MAILSVC_* overrides by field name."""
    env = {
        **os.environ,
        "MAILSVC_DATA_DIR": str(tmp_path / "var"),
        "MAILSVC_KAFKA_BOOTSTRAP": bootstrap,
        "MAILSVC_KAFKA_TOPIC_PREFIX": unique.prefix,
        "MAILSVC_KAFKA_GROUP_PREFIX": unique.id,
        "MAILSVC_KAFKA_PARTITIONS": "3",
        "MAILSVC_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "MAILSVC_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "MAILSVC_CONSUMER_RETRY_BACKOFF_S": "0.1",
        "MAILSVC_MASTER_KEY": generate_master_key(),
        "MAILSVC_BOOTSTRAP_API_KEY": API_KEY,
        "MAILSVC_MAIL_DOMAIN": "mail.example.com",
        "MAILSVC_MAILING_PUBLIC_URL": "https://mailer.example.com/p",
        "MAILSVC_MAILING_LEASE_S": "3",
        "MAILSVC_MAILING_SCHEDULER_INTERVAL_S": "0.2",
        "MAILSVC_MAILING_RETRY_BASE_S": "0.3",
        "MAILSVC_MAILING_RETRY_MAX_S": "1.0",
        "MAILSVC_MAILING_BATCH_SIZE": "50",
        "MAILSVC_LOG_LEVEL": "WARNING",
    }
    env.update({f"MAILSVC_{name.upper()}": str(value) for name, value in settings.items()})
    return env


@asynccontextmanager
async def mailer(
    env: dict[str, str], tmp_path: Path
) -> AsyncIterator[tuple[MailerProcess, httpx.AsyncClient]]:
    """A started, ready mass mailer process and an HTTP client to it; SIGTERM at the end."""
    port = free_port()
    process = MailerProcess({**env, "MAILSVC_HTTP_PORT": str(port)}, tmp_path / f"mailer-{port}.log", port)
    process.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            await process.ready(client)
            yield process, client
    finally:
        process.stop()


async def setup_mailing(
    client: httpx.AsyncClient, relay_host: str, relay_port: int, count: int, *, delay_s: float = 1.0
) -> int:
    """Identity on the relay (pool of 4), template, ``count`` contacts in a group, a mailing
    scheduled ``delay_s`` ahead; returns the mailing id."""

    async def post(path: str, **kwargs: Any) -> dict:
        reply = await client.post(path, headers=AUTH, **kwargs)
        assert reply.status_code in (200, 201), f"{path}: {reply.status_code} {reply.text}"
        return reply.json()

    await post("/v1/dkim-keys", json={"domain": "example.com", "selector": "s1", "algorithm": "rsa"})
    await post(
        "/v1/sender-identities",
        json={
            "name": "News", "email": "news@example.com", "dkim_domain": "example.com", "pool_size": 4,
            "relay": {"host": relay_host, "port": relay_port, "tls": "none"},
        },
    )  # fmt: skip
    template = await post("/v1/templates", json={"name": "T", "subject": SUBJECT, "design": DESIGN})
    await post("/v1/contacts/import", content=contacts_csv(count))
    await post("/v1/target-groups", json={"id": "g", "name": "G", "active": True})
    ids = [f"c{i:05d}" for i in range(count)]
    for at in range(0, count, MEMBERS_PER_CALL):
        await post("/v1/target-groups/g/members", json={"contact_ids": ids[at : at + MEMBERS_PER_CALL]})
    mailing = await post(
        "/v1/mailings",
        json={"name": "M", "target_group_id": "g", "template_id": template["id"], "sender_identity": "News"},
    )
    when = (datetime.now(UTC) + timedelta(seconds=delay_s)).isoformat()
    await post(f"/v1/mailings/{mailing['id']}/schedule", json={"at": when})
    return int(mailing["id"])


async def status(client: httpx.AsyncClient, mailing_id: int) -> dict:
    reply = await client.get(f"/v1/mailings/{mailing_id}", headers=AUTH)
    assert reply.status_code == 200, reply.text
    return reply.json()


async def wait_completed(
    client: httpx.AsyncClient,
    process: MailerProcess,
    mailing_id: int,
    timeout: float,
    seen: set[str] | None = None,
) -> dict:
    """Poll until the mailing is completed; every status seen on the way goes into ``seen``.
    Transport errors (the API's database is down) count as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.alive, f"the mass mailer exited:\n{process.log_tail()}"
        try:
            found = await status(client, mailing_id)
        except (httpx.TransportError, AssertionError):
            found = None
        if found is not None:
            if seen is not None:
                seen.add(found["status"])
            if found["status"] == "completed":
                return found
        assert time.monotonic() < deadline, (
            f"mailing not completed in {timeout} s: {found}\n{process.log_tail()}"
        )
        await asyncio.sleep(0.3)


async def all_deliveries(client: httpx.AsyncClient, mailing_id: int) -> list[dict]:
    rows: list[dict] = []
    while True:
        reply = await client.get(
            f"/v1/mailings/{mailing_id}/deliveries",
            headers=AUTH,
            params={"after": rows[-1]["id"] if rows else 0, "limit": 5000},
        )
        assert reply.status_code == 200, reply.text
        page = reply.json()
        if not page:
            return rows
        rows += page


def duplicates(counts: collections.Counter[str]) -> int:
    """Extra copies beyond the first, summed over recipients."""
    return sum(n - 1 for n in counts.values() if n > 1)
