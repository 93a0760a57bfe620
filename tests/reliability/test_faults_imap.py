"""Reliability: IMAP faults under the mail scanner (in-process, real Dovecot, real Kafka).

- a private Dovecot stopped and started again (same mail dir) in the middle of an import;
- connections cut by a loopback proxy in the middle of a body FETCH;
- one account with a wrong password next to two working accounts.

Every scenario ends with every mail imported exactly once (one ticket per mail, one imported-mail
row per mail, every mail flagged \\Seen). Figures (recovery time, reconnects) are printed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import select

from services.mail_scanner.app import create_app
from services.mail_scanner.models import ImportedMail, ScannerAccount, Ticket
from shared.db import session_scope
from shared.settings import Settings
from tests.integration.harness import AUTH, eventually, running, service_settings
from tests.mail_scanner.engine.helpers import FAST, add_account, append, imap, mail, tickets
from tests.reliability import logcapture
from tests.reliability.procs_helpers import FaultProxy, metric, parse_metrics
from tests.servers.dovecot import DovecotServer

pytestmark = pytest.mark.timeout(600)
IMAP_ERRORS = "mailsvc_imap_errors_total"


def scanner_settings(kafka_broker: Any, unique: Any, tmp_path: Any, **extra: Any) -> Settings:
    values = {**FAST, "scanner_batch_size": 10, "scanner_imap_timeout_s": 15.0, **extra}
    return service_settings(kafka_broker, unique, tmp_path, **values)


def fill(server: Any, folder: str, count: int, tag: str, user: str = "alice") -> list[str]:
    """Create ``folder`` for ``user`` with ``count`` distinct mails; returns their subjects."""
    subjects = [f"{tag} mail {i}" for i in range(count)]
    with imap(server, user) as client:
        client.create_folder(folder)
        for i, subject in enumerate(subjects):
            client.append(folder, mail(sender=f"{tag}-{i}@example.org", subject=subject))
    return subjects


def unseen(server: Any, folder: str, user: str = "alice") -> int:
    with imap(server, user) as client:
        client.select_folder(folder, readonly=True)
        return len(client.search("UNSEEN"))


def ticket_count(settings: Settings) -> int:
    with session_scope(settings.service_database_url("mail_scanner")) as session:
        return session.exec(select(func.count()).select_from(Ticket)).one()


def imported_rows(settings: Settings) -> int:
    with session_scope(settings.service_database_url("mail_scanner")) as session:
        return session.exec(select(func.count()).select_from(ImportedMail)).one()


async def all_tickets(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every ticket (the API returns at most 1,000 per page)."""
    rows: list[dict[str, Any]] = []
    while page := await tickets(client, offset=len(rows)):
        rows += page
        if len(page) < 1000:
            break
    return rows


async def account(client: httpx.AsyncClient, account_id: int) -> dict[str, Any]:
    reply = await client.get(f"/v1/accounts/{account_id}", headers=AUTH)
    assert reply.status_code == 200, reply.text
    return reply.json()


async def imap_errors(client: httpx.AsyncClient, account_id: int) -> float:
    reply = await client.get("/metrics")
    assert reply.status_code == 200, reply.text
    return metric(parse_metrics(reply.text), IMAP_ERRORS, account=str(account_id))


async def assert_exactly_once(
    client: httpx.AsyncClient,
    settings: Settings,
    expected: list[str],
    by_account: dict[int, int] | None = None,
) -> None:
    rows = await all_tickets(client)
    subjects = [t["subject"] for t in rows]
    duplicated = len(subjects) - len(set(subjects))
    lost = len(set(expected) - set(subjects))
    print(f"lost {lost}, duplicated {duplicated}")
    assert lost == 0 and duplicated == 0
    assert sorted(subjects) == sorted(expected)
    assert await asyncio.to_thread(imported_rows, settings) == len(expected)
    if by_account is not None:
        counts: dict[int, int] = {}
        for row in rows:
            counts[row["account_id"]] = counts.get(row["account_id"], 0) + 1
        assert counts == by_account


async def wait_imported(
    settings: Settings, server: Any, folders: list[tuple[str, str]], total: int, timeout: float = 120
) -> None:
    """Until ``total`` tickets exist and no mail in ``folders`` ((user, folder)) is unseen."""

    async def done() -> bool:
        if await asyncio.to_thread(ticket_count, settings) < total:
            return False
        for user, folder in folders:
            if await asyncio.to_thread(unseen, server, folder, user):
                return False
        return True

    await eventually(done, timeout=timeout, interval=0.3)


# --- 1. Dovecot restarted mid-import -------------------------------------------------------------


async def restart_run(kafka_broker: Any, unique: Any, tmp_path: Any, total: int, restarts: int) -> None:
    # ~700 bytes per mail at 80 bytes/s per mail (12 KB/s for 150): the import takes about 9 s
    # whatever the size, so each restart lands in it
    with DovecotServer() as server, FaultProxy(server.host, server.imap_port, rate=80.0 * total) as proxy:
        folder = f"restart-{unique.id}"
        subjects = await asyncio.to_thread(fill, server, folder, total, unique.id)
        settings = scanner_settings(kafka_broker, unique, tmp_path)
        async with running(create_app, settings) as client:
            row = await add_account(client, server, folder, port=proxy.port)
            recoveries: list[float] = []
            for n in range(restarts):
                threshold = (n + 1) * total // (restarts + 2)
                await eventually(lambda t=threshold: _at_least(settings, t), timeout=120, interval=0.1)
                await asyncio.to_thread(server.stop)
                await eventually(lambda: _in_error(client, row["id"]), timeout=60, interval=0.1)
                at_stop = await asyncio.to_thread(ticket_count, settings)
                assert at_stop < total, "the restart did not land in the middle of the import"
                await asyncio.to_thread(server.start)
                t_up = time.monotonic()
                await eventually(lambda s=at_stop: _at_least(settings, s + 1), timeout=120, interval=0.1)
                recoveries.append(time.monotonic() - t_up)
                print(f"restart {n + 1}: {at_stop} of {total} imported when Dovecot stopped")
            await wait_imported(settings, server, [("alice", folder)], total, timeout=240)
            # and once more while the account sits in IDLE: the dead connection must be noticed
            await eventually(lambda: _state_in(client, row["id"], ("idle",)), timeout=60)
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
            t_up = time.monotonic()
            late = [f"{unique.id} late {i}" for i in range(5)]
            await asyncio.to_thread(append, server, folder, *(mail(subject=s) for s in late))
            await wait_imported(settings, server, [("alice", folder)], total + len(late))
            idle_recovery = time.monotonic() - t_up
            await eventually(lambda: _state_in(client, row["id"], ("idle",)), timeout=60)
            state = await account(client, row["id"])
            await assert_exactly_once(client, settings, subjects + late)
        print(
            f"RESULT scenario=imap_restart mails={total + len(late)} restarts={restarts}+1_idle "
            f"recovery_s={','.join(f'{r:.1f}' for r in recoveries)} idle_recovery_s={idle_recovery:.1f} "
            f"connections={proxy.connections} final_state={state['state']}"
        )


async def _at_least(settings: Settings, count: int) -> bool:
    return await asyncio.to_thread(ticket_count, settings) >= count


async def _in_error(client: httpx.AsyncClient, account_id: int) -> bool:
    return (await account(client, account_id))["state"] == "error"


async def test_dovecot_restart_mid_import_imports_every_mail_once(kafka_broker, unique, tmp_path):
    await restart_run(kafka_broker, unique, tmp_path, total=150, restarts=1)


@pytest.mark.soak
async def test_soak_dovecot_restarted_three_times_during_1000_mails(kafka_broker, unique, tmp_path):
    await restart_run(kafka_broker, unique, tmp_path, total=1000, restarts=3)


# --- 2. connection dropped during FETCH ----------------------------------------------------------


async def drop_run(
    kafka_broker: Any, dovecot: Any, unique: Any, tmp_path: Any, total: int, cuts: int
) -> None:
    folder = f"drop-{unique.id}"
    subjects = await asyncio.to_thread(fill, dovecot, folder, total, unique.id)
    settings = scanner_settings(kafka_broker, unique, tmp_path)
    with FaultProxy(dovecot.host, dovecot.imap_port) as proxy:
        proxy.cut_fetches(cuts, after_bytes=3_000)  # inside the first message literal of a batch
        async with running(create_app, settings) as client:
            row = await add_account(client, dovecot, folder, port=proxy.port)
            errors_before = await imap_errors(client, row["id"])
            await wait_imported(settings, dovecot, [("alice", folder)], total)
            errors = await imap_errors(client, row["id"]) - errors_before
            state = await account(client, row["id"])
            await assert_exactly_once(client, settings, subjects)
        print(
            f"RESULT scenario=imap_fetch_drop mails={total} cuts={proxy.cuts_done} "
            f"connections={proxy.connections} imap_errors={errors:.0f} final_state={state['state']}"
        )
        assert proxy.cuts_done == cuts
        assert proxy.connections >= cuts + 1  # the scanner reconnected after every cut
        assert errors >= cuts  # every cut shows on /metrics
        assert state["state"] in ("idle", "polling")


async def test_connection_cut_during_fetch_reconnects_and_loses_nothing(
    kafka_broker, dovecot, unique, tmp_path
):
    await drop_run(kafka_broker, dovecot, unique, tmp_path, total=60, cuts=2)


@pytest.mark.soak
async def test_soak_ten_fetch_cuts_during_600_mails(kafka_broker, dovecot, unique, tmp_path):
    await drop_run(kafka_broker, dovecot, unique, tmp_path, total=600, cuts=10)


# --- 3. login failure for one of three accounts -------------------------------------------------


async def test_wrong_password_on_one_account_leaves_the_others_unaffected(
    kafka_broker, dovecot, unique, tmp_path
):
    per_account = 20
    wrong = f"wrong-{unique.id}-pw"
    logcapture.register_secret(wrong, "a wrong IMAP password (test_faults_imap)")
    folders = {"bad": f"bad-{unique.id}", "alice": f"ok-{unique.id}", "bob": f"bob-{unique.id}"}
    bad_subjects = await asyncio.to_thread(fill, dovecot, folders["bad"], per_account, f"{unique.id}-bad")
    ok_subjects = await asyncio.to_thread(fill, dovecot, folders["alice"], per_account, f"{unique.id}-ok")
    bob_subjects = await asyncio.to_thread(
        fill, dovecot, folders["bob"], per_account, f"{unique.id}-bob", "bob"
    )
    settings = scanner_settings(kafka_broker, unique, tmp_path)
    async with running(create_app, settings) as client:
        bad = await add_account(client, dovecot, folders["bad"], password=wrong)
        errors_before = await imap_errors(client, bad["id"])
        ok = await add_account(client, dovecot, folders["alice"])
        bob = await add_account(
            client, dovecot, folders["bob"], username="bob", password=dovecot.users["bob"]
        )
        good_before = {a["id"]: await imap_errors(client, a["id"]) for a in (ok, bob)}
        await wait_imported(
            settings, dovecot, [("alice", folders["alice"]), ("bob", folders["bob"])], 2 * per_account
        )
        await eventually(lambda: _in_error(client, bad["id"]), timeout=60)
        failing = await account(client, bad["id"])
        await eventually(
            lambda: _errors_above(client, bad["id"], errors_before), timeout=60
        )  # the counter is incremented right after the state is written
        errors = await imap_errors(client, bad["id"]) - errors_before
        print(
            f"failing account: state={failing['state']} last_error={failing['last_error']!r} errors={errors}"
        )
        assert "LoginError" in failing["last_error"]
        assert (
            wrong not in failing["last_error"]
            and wrong not in (await client.get("/v1/accounts", headers=AUTH)).text
        )
        assert await asyncio.to_thread(unseen, dovecot, folders["bad"]) == per_account  # nothing touched
        await assert_exactly_once(
            client, settings, ok_subjects + bob_subjects, {ok["id"]: per_account, bob["id"]: per_account}
        )
        for good in (ok, bob):
            assert (await account(client, good["id"]))["state"] in ("idle", "polling")
            assert await imap_errors(client, good["id"]) == good_before[good["id"]]

        t_fixed = time.monotonic()
        reply = await client.patch(
            f"/v1/accounts/{bad['id']}", json={"password": dovecot.users["alice"]}, headers=AUTH
        )
        assert reply.status_code == 200, reply.text
        await wait_imported(settings, dovecot, [("alice", folders["bad"])], 3 * per_account)
        recovered = time.monotonic() - t_fixed
        await eventually(lambda: _state_in(client, bad["id"], ("idle", "polling")), timeout=60)
        await assert_exactly_once(
            client,
            settings,
            bad_subjects + ok_subjects + bob_subjects,
            {bad["id"]: per_account, ok["id"]: per_account, bob["id"]: per_account},
        )
    print(f"RESULT scenario=imap_login_failure imap_errors={errors:.0f} recovery_after_fix_s={recovered:.1f}")


async def _errors_above(client: httpx.AsyncClient, account_id: int, before: float) -> bool:
    return await imap_errors(client, account_id) > before


async def _state_in(client: httpx.AsyncClient, account_id: int, states: tuple[str, ...]) -> bool:
    return (await account(client, account_id))["state"] in states


# --- 4. an idle account: IDLE really waits (regression) -----------------------------------------


def lease_until(settings: Settings, account_id: int) -> Any:
    with session_scope(settings.service_database_url("mail_scanner")) as session:
        row = session.get(ScannerAccount, account_id)
        return None if row is None else row.lease_until


async def test_idle_account_sends_no_commands_and_keeps_renewing_its_lease(
    kafka_broker, dovecot, unique, tmp_path
):
    """A SELECT leaves its EXISTS count in imaplib's untagged responses; taken for news, it ended
    every IDLE at once: the worker re-synced in a loop (SELECT/SEARCH/IDLE/DONE many times a
    second per account) and never renewed its lease while idle, so another instance could take
    the account. Now: between two lease renewals an idle account sends nothing to the server, and
    a change made through the API still reaches it."""
    folder = f"idle-{unique.id}"
    await asyncio.to_thread(fill, dovecot, folder, 3, unique.id)
    settings = scanner_settings(kafka_broker, unique, tmp_path)
    with FaultProxy(dovecot.host, dovecot.imap_port) as proxy:
        async with running(create_app, settings) as client:
            row = await add_account(client, dovecot, folder, port=proxy.port)
            await wait_imported(settings, dovecot, [("alice", folder)], 3)
            await eventually(lambda: _state_in(client, row["id"], ("idle",)), timeout=60)

            async def renewed(after: Any) -> Any:
                current = await asyncio.to_thread(lease_until, settings, row["id"])
                return current if current is not None and after is not None and current > after else None

            first = await asyncio.to_thread(lease_until, settings, row["id"])
            first = await eventually(lambda: renewed(first), timeout=60)
            sent_before = proxy.client_bytes
            await eventually(lambda: renewed(first), timeout=60)
            sent = proxy.client_bytes - sent_before
            state = await account(client, row["id"])
            # a change through the API reaches an idle account (here: one more folder to scan)
            other = f"idle2-{unique.id}"
            await asyncio.to_thread(fill, dovecot, other, 2, f"{unique.id}-2")
            reply = await client.patch(
                f"/v1/accounts/{row['id']}", json={"folders": [folder, other]}, headers=AUTH
            )
            assert reply.status_code == 200, reply.text
            await wait_imported(settings, dovecot, [("alice", folder), ("alice", other)], 5)
    print(f"RESULT scenario=imap_idle bytes_sent_between_renewals={sent} state={state['state']}")
    assert sent == 0
    assert state["state"] == "idle" and state["lease_owner"]
