"""Messages per second from SmtpPool into Postfix's smtp-sink, with 1, 4 and 8 connections.

    uv run python -m bench.smtp_send [--messages N] [--quick] [--profile]

Each run sends N pre-built ~20 KB messages (one worker task per connection) and waits until the
sink has counted them all; it also prints this process's CPU time per message (the client is
the bottleneck: on a 2-core machine smtp-sink gets the other core). The last line is
``RESULT conns1_msgs_per_s=... conns4_msgs_per_s=... conns8_msgs_per_s=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import pstats
import time

from shared.mail.pool import SmtpPool
from shared.mail.smtp import Outcome, RelayConfig
from tests.servers.smtp import PostfixSmtpSink

CONNECTIONS = (1, 4, 8)
SENDER = "bench@example.test"
RECIPIENTS = ["rcpt@example.test"]


def build_messages(count: int = 64, size: int = 20_000) -> list[bytes]:
    """``count`` distinct ~``size``-byte messages: headers plus 76-character text lines."""
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod temp\r\n"
    body = line * (size // len(line))
    return [
        b"From: Bench <bench@example.test>\r\nTo: rcpt@example.test\r\nSubject: bench %d\r\n"
        b"Message-ID: <%d.bench@example.test>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n%s" % (n, n, body)
        for n in range(count)
    ]


async def run(sink: PostfixSmtpSink, connections: int, total: int, messages: list[bytes]) -> float:
    relay = RelayConfig(host=sink.host, port=sink.port, local_hostname="bench.example.test")
    before = sink.received()
    counter = itertools.count()
    failures: list[str] = []

    async def worker(pool: SmtpPool) -> None:
        while (n := next(counter)) < total:
            result = await pool.send(messages[n % len(messages)], SENDER, RECIPIENTS)
            if result.outcome is not Outcome.SENT:
                failures.append(result.detail)

    start = time.perf_counter()
    async with SmtpPool(relay, size=connections) as pool:
        await asyncio.gather(*(worker(pool) for _ in range(connections)))
    elapsed = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} failures, first: {failures[0]}")
    deadline = time.monotonic() + 10
    while sink.received() - before < total and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    if (got := sink.received() - before) != total:
        raise SystemExit(f"smtp-sink counted {got} of {total} messages")
    return total / elapsed


async def main_async(total: int, profile: bool) -> dict[int, float]:
    messages = build_messages()
    print(f"message size {len(messages[0]):,} bytes, {total:,} messages per run")
    rates: dict[int, float] = {}
    with PostfixSmtpSink(count=True) as sink:
        await run(sink, 2, min(total, 200), messages)  # warm-up
        for connections in CONNECTIONS:
            profiler = cProfile.Profile() if profile else None
            if profiler:
                profiler.enable()
            cpu = time.process_time()
            rates[connections] = await run(sink, connections, total, messages)
            cpu_us = (time.process_time() - cpu) / total * 1e6
            if profiler:
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            rate = rates[connections]
            print(f"{connections} connection(s): {rate:,.0f} msg/s, client CPU {cpu_us:.0f} us/msg")
    return rates


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--messages", type=int, default=5_000, help="messages per run (default 5000)")
    parser.add_argument("--quick", action="store_true", help="500 messages per run")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of each run")
    args = parser.parse_args()
    rates = asyncio.run(main_async(500 if args.quick else args.messages, args.profile))
    print("RESULT " + " ".join(f"conns{c}_msgs_per_s={rates[c]:.0f}" for c in CONNECTIONS))


if __name__ == "__main__":
    main()
