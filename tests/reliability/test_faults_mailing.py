"""A mass mailing through outages of its infrastructure, and its relay rate limit.

- Broker restart: a private Apache Kafka (never the session broker) is stopped for 10 s
  mid-mailing and started again on the same log dir.
- Database outage: a private PostgreSQL is stopped ("fast") for 10 s mid-mailing.
  In both: the service keeps running and recovers, nobody is lost, duplicates at the relay stay
  within the in-flight window (sender concurrency x processes); lost / duplicated / recovery
  time are printed as ``RESULT`` lines.
- Rate limit: with MAILSVC_MAILING_RELAY_RATE_PER_S the relay never sees more than the limit
  (+5 %) in any window after warm-up, counted on the relay's accept times.

The mass mailer runs as a ``faststream run`` process (tests/reliability/mailer_proc.py); the relay
is tests/reliability/faultsmtp.py without faults (it records accept times).
Default run: 2,000 recipients (outages), one 24 s window at 50/s (see run_rate_limit for why
not 2 s windows); ``-m soak``: 20,000 recipients, 5 windows of 60 s.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability.faultsmtp import Accept, FaultSmtp
from tests.reliability.mailer_proc import (
    FINAL,
    MailerProcess,
    all_deliveries,
    duplicates,
    mailer,
    mailer_env,
    recipients,
    setup_mailing,
    wait_completed,
)
from tests.servers.kafka import KafkaBroker
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.timeout(900)
CONCURRENCY = 16  # MAILSVC_MAILING_SENDER_CONCURRENCY of the one sender process
PROCESSES = 1
IN_FLIGHT_WINDOW = CONCURRENCY * PROCESSES
OUTAGE_S = 10.0


def recovery_figures(accepts: list[Accept], down: float, back: float) -> tuple[float, float, float]:
    """(seconds from going down to the last accept before it came back, seconds from coming back to
    the first accept after it, longest pause between accepts around the outage)."""
    before = [a.at for a in accepts if a.at <= back]
    after = [a.at for a in accepts if a.at > back]
    stalled = max(0.0, max(before) - down) if before else 0.0
    resumed = (min(after) - back) if after else float("nan")
    around = sorted(a.at for a in accepts if down - 1 <= a.at)
    gap = max((b - a for a, b in itertools.pairwise(around)), default=0.0)
    return stalled, resumed, gap


async def wait_share(relay: FaultSmtp, count: int, share: float, process: MailerProcess) -> None:
    """Until ``share`` of ``count`` recipients were accepted (the outage lands mid-mailing)."""
    need = int(count * share)
    try:
        await asyncio.to_thread(relay.wait_accepted, lambda a: len(a) >= need, 180, f"{need} accepted")
    except TimeoutError:
        raise AssertionError(f"the mailing never got going:\n{process.log_tail()}") from None


def check_outcome(scenario: str, count: int, relay: FaultSmtp, rows: list[dict], extra: str) -> None:
    counts = relay.accepted_counts()
    lost = [r for r in recipients(count) if counts[r] == 0]
    extra_copies = duplicates(counts)
    statuses = Counter(r["status"] for r in rows)
    print(
        f"\nRESULT scenario={scenario} recipients={count} lost={len(lost)} duplicates={extra_copies} "
        f"in_flight_window={IN_FLIGHT_WINDOW} {extra} statuses={dict(statuses)}"
    )
    assert len(rows) == count and set(statuses) <= FINAL, statuses
    assert statuses["sent"] == count, statuses
    assert not lost, lost[:10]
    assert extra_copies <= IN_FLIGHT_WINDOW


# -- outages ---------------------------------------------------------------------------------


async def run_outage(
    scenario: str,
    count: int,
    tmp_path: Path,
    env: dict[str, str],
    take_down: Callable[[], None],
    bring_back: Callable[[], None],
) -> None:
    """A mailing of ``count``; at 30 % ``take_down()``, OUTAGE_S later ``bring_back()``; then every
    recipient must be sent, nobody lost, duplicates within the in-flight window."""
    began = time.monotonic()
    relay = FaultSmtp()
    with relay:
        async with mailer(env, tmp_path) as (process, client):
            mailing_id = await setup_mailing(client, relay.host, relay.port, count)
            await wait_share(relay, count, 0.3, process)
            down = time.monotonic()
            at_stop = len(relay.accepts)
            take_down()
            stopped = time.monotonic()
            await asyncio.sleep(OUTAGE_S)  # the outage itself, not a synchronisation
            assert process.alive, f"the mass mailer exited during the outage:\n{process.log_tail()}"
            bring_back()
            back = time.monotonic()
            done = await wait_completed(client, process, mailing_id, timeout=300 + count / 20)
            completed = time.monotonic() - back
            rows = await all_deliveries(client, mailing_id)
            assert process.alive
        stalled, resumed, gap = recovery_figures(relay.accepts, down, back)
        check_outcome(
            scenario,
            count,
            relay,
            rows,
            f"start_to_first_send_s={relay.accepts[0].at - began:.1f} accepted_at_stop={at_stop} "
            f"stop_took_s={stopped - down:.1f} sends_continued_after_stop_s={stalled:.1f} "
            f"first_send_after_restart_s={resumed:.1f} longest_pause_s={gap:.1f} "
            f"restart_to_completed_s={completed:.1f} progress={done['progress']}",
        )


async def run_broker_restart(unique, tmp_path: Path, count: int) -> None:
    """A private Apache Kafka, stopped (SIGTERM: controlled shutdown) and started on the same log dir."""
    with KafkaBroker(tmp_path / "kafka") as broker:
        env = mailer_env(broker.bootstrap, unique, tmp_path, mailing_sender_concurrency=CONCURRENCY)
        await run_outage("broker_restart", count, tmp_path, env, broker.stop, broker.start)


async def test_kafka_restart_mid_mailing_loses_nobody(unique, tmp_path):
    await run_broker_restart(unique, tmp_path, 2_000)


@pytest.mark.soak
@pytest.mark.timeout(3600)
async def test_kafka_restart_mid_mailing_soak(unique, tmp_path):
    await run_broker_restart(unique, tmp_path, 20_000)


async def run_database_outage(kafka_broker, unique, tmp_path: Path, count: int) -> None:
    """A private PostgreSQL, stopped "fast" (clients disconnected) and started on the same data dir."""
    with PostgresServer() as pg:
        env = mailer_env(
            kafka_broker.bootstrap,
            unique,
            tmp_path,
            database_url=pg.url,
            mailing_sender_concurrency=CONCURRENCY,
        )
        await run_outage("database_outage", count, tmp_path, env, lambda: pg.stop("fast"), pg.start)


async def test_postgres_outage_mid_mailing_loses_nobody(kafka_broker, unique, tmp_path):
    await run_database_outage(kafka_broker, unique, tmp_path, 2_000)


@pytest.mark.soak
@pytest.mark.timeout(3600)
async def test_postgres_outage_mid_mailing_soak(kafka_broker, unique, tmp_path):
    await run_database_outage(kafka_broker, unique, tmp_path, 20_000)


# -- relay rate limit -------------------------------------------------------------------------


def window_counts(accepts: list[Accept], start: float, window_s: float, windows: int) -> list[int]:
    """Accepts per consecutive window of ``window_s`` from ``start``."""
    return [
        sum(1 for a in accepts if start + i * window_s <= a.at < start + (i + 1) * window_s)
        for i in range(windows)
    ]


async def run_rate_limit(
    kafka_broker, unique, tmp_path: Path, rate: float, window_s: float, windows: int
) -> None:
    """The limiter is a token bucket holding up to min(rate, 50) tokens (1 s of sending at 50/s):
    after a stall of the machine, up to that many go out at once. So any window can exceed
    rate * window by that burst, and the +5 % bound is sound only for windows of 20 s and more
    (at 50/s). Shorter sub-windows are printed, not asserted."""
    warm_up_s = 2.0
    burst = min(rate, 50.0)
    assert burst <= 0.05 * rate * window_s * 0.85, "window too short for a sound +5 % bound"
    end = warm_up_s + window_s * windows
    # Enough recipients that the limiter, not a shortage of work, sets the pace in every window.
    count = int(rate * end * 1.3) + 100
    relay = FaultSmtp()
    env = mailer_env(
        kafka_broker.bootstrap,
        unique,
        tmp_path,
        mailing_relay_rate_per_s=rate,
        mailing_sender_concurrency=CONCURRENCY,
    )
    with relay:
        async with mailer(env, tmp_path) as (process, client):
            await setup_mailing(client, relay.host, relay.port, count)
            try:
                await asyncio.to_thread(
                    relay.wait_accepted,
                    lambda a: bool(a) and a[-1].at - a[0].at >= end,
                    300 + end * 3,
                    "the measured windows",
                )
            except TimeoutError:
                raise AssertionError(f"the mailing did not last the windows:\n{process.log_tail()}") from None
    accepts = relay.accepts
    start = accepts[0].at + warm_up_s
    counts = window_counts(accepts, start, window_s, windows)
    short = window_counts(accepts, start, 2.0, int(window_s * windows / 2))
    limit = rate * window_s
    print(
        f"\nRESULT scenario=rate_limit rate_per_s={rate} window_s={window_s} limit_per_window={limit:.0f} "
        f"per_window={counts} max_ratio={max(counts) / limit:.3f} min_ratio={min(counts) / limit:.3f} "
        f"per_2s_window={short} max_2s_ratio={max(short) / (rate * 2):.3f}"
    )
    assert len(counts) == windows
    assert max(counts) <= limit * 1.05, counts  # never faster than the limit
    if min(counts) < limit * 0.95:  # slower: the machine, not the limiter (reported, not failed)
        warnings.warn(
            f"sending was below the rate limit in some window: {counts} (limit {limit:.0f})", stacklevel=1
        )


async def test_relay_rate_limit_holds_per_window(kafka_broker, unique, tmp_path):
    await run_rate_limit(kafka_broker, unique, tmp_path, rate=50.0, window_s=24.0, windows=1)


@pytest.mark.soak
@pytest.mark.timeout(3600)
async def test_relay_rate_limit_holds_per_minute_soak(kafka_broker, unique, tmp_path):
    await run_rate_limit(kafka_broker, unique, tmp_path, rate=50.0, window_s=60.0, windows=5)
