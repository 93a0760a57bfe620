"""Pause at ~30 % and resume (0 duplicates, 0 skipped), cancel at ~50 % (nothing after the cancel
settles), and a sink answering 451 to 5 % (no pause, all delivered, retries recorded)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest

from tests.integration.harness import running
from tests.mass_mailer.engine.conftest import (
    contacts_csv,
    create_identity,
    create_mailing,
    create_template,
    deliveries,
    import_group,
    mailing,
    wait_status,
)
from tests.mass_mailer.engine.wiring import create_app
from tests.servers.smtp import OK

pytestmark = pytest.mark.timeout(300)
N = 300


def slow_sink(sink, delay_s: float) -> None:
    """Each DATA takes ``delay_s``, so a mailing lasts long enough to act on it midway."""

    def hook(_message) -> str:
        threading.Event().wait(delay_s)
        return OK

    sink.hook = hook


async def wait_accepted_at_least(sink, count: int) -> None:
    while len(sink.accepted) < count:
        await asyncio.sleep(0.02)


async def test_pause_resume_sends_everyone_once_and_cancel_stops(engine_settings, kafka_broker, smtp_sink):
    slow_sink(smtp_sink, 0.01)
    async with running(create_app, engine_settings) as client:
        await create_identity(client, smtp_sink, pool_size=2)
        template_id = await create_template(client, engine_settings)
        await import_group(client, contacts_csv(N))

        first = await create_mailing(client, template_id, delay_s=0.5)
        await wait_accepted_at_least(smtp_sink, int(N * 0.3))
        paused = (await client.post(f"/v1/mailings/{first}/pause", headers={"X-API-Key": _key()})).json()
        assert paused["status"] == "paused"
        await asyncio.sleep(1.5)  # in-flight sends finish; then nothing moves
        at_pause = len(smtp_sink.accepted)
        await asyncio.sleep(1.0)
        assert len(smtp_sink.accepted) == at_pause < N
        resumed = await client.post(f"/v1/mailings/{first}/resume", headers={"X-API-Key": _key()})
        assert resumed.json()["status"] == "sending"
        done = await wait_status(client, first, "completed")
        counts = Counter(r for m in smtp_sink.accepted for r in m.rcpt_tos)
        assert len(counts) == N and max(counts.values()) == 1  # 0 skipped, 0 duplicates
        assert done["progress"]["sent"] == N

        smtp_sink.clear()
        second = await create_mailing(client, template_id, delay_s=0.5)
        await wait_accepted_at_least(smtp_sink, N // 2)
        cancelled = await client.post(f"/v1/mailings/{second}/cancel", headers={"X-API-Key": _key()})
        assert cancelled.json()["status"] == "cancelled"
        at_cancel = len(smtp_sink.accepted)
        await asyncio.sleep(2.0)
        settled = len(smtp_sink.accepted)
        await asyncio.sleep(1.5)
        rows = await deliveries(client, second)
        in_flight = settled - at_cancel
        print(f"cancel: {at_cancel} accepted when cancel returned, {in_flight} in flight finished after it")
        assert len(smtp_sink.accepted) == settled < N  # nothing after the cancel settled
        statuses = Counter(r["status"] for r in rows)
        assert statuses["sent"] == settled and statuses["failed"] == N - settled
        assert (await mailing(client, second))["status"] == "cancelled"


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_451_to_5_percent_is_retried_without_pausing(
    database, engine_settings, kafka_broker, smtp_sink, request
):
    if database == "postgres":
        url = request.getfixturevalue("postgres").create_database()
        engine_settings = engine_settings.model_copy(update={"database_url": url})
    refused: set[str] = set()

    def hook(message) -> str:
        rcpt = message.rcpt_tos[0]
        if int(rcpt[1:6]) % 20 == 7 and rcpt not in refused:
            refused.add(rcpt)
            return "451 4.7.1 slow down"
        return OK

    smtp_sink.hook = hook
    async with running(create_app, engine_settings) as client:
        await create_identity(client, smtp_sink)
        template_id = await create_template(client, engine_settings)
        await import_group(client, contacts_csv(200))
        mailing_id = await create_mailing(client, template_id, delay_s=0.5)
        seen: set[str] = set()

        async def watch() -> None:
            while True:
                seen.add((await mailing(client, mailing_id))["status"])
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch())
        done = await wait_status(client, mailing_id, "completed")
        watcher.cancel()
        rows = await deliveries(client, mailing_id)
    assert "paused" not in seen
    assert len(refused) == 10 and done["progress"]["sent"] == 200
    accepted = Counter(r for m in smtp_sink.accepted for r in m.rcpt_tos)
    assert len(accepted) == 200 and max(accepted.values()) == 1
    retried = {r["email"]: r["attempts"] for r in rows if r["attempts"] > 1}
    assert retried == dict.fromkeys(refused, 2)


def _key() -> str:
    from tests.integration.harness import API_KEY

    return API_KEY
