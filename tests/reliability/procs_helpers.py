"""Helpers of the IMAP-fault and scale-out tests: a fault-injecting TCP proxy, `faststream run`
service processes, and Prometheus text parsing.

FaultProxy sits on loopback between the scanner and Dovecot. It runs its own event loop in a
thread, so a test that blocks its own loop (IMAP helpers, Dovecot stop/start) never stalls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.servers.procs import free_port, spawn, stop

FETCH_BODY = b"BODY.PEEK[]"


class FaultProxy:
    """A TCP proxy 127.0.0.1:port -> upstream that can cut connections during a body FETCH.

    ``cut_fetches(n, after_bytes)``: the next ``n`` connections that send a body FETCH
    (``BODY.PEEK[]``) are closed after ``after_bytes`` bytes of the server's answer reached the
    client. ``rate`` (bytes/s, server -> client) slows downloads so a fault lands mid-import.
    """

    host = "127.0.0.1"

    def __init__(self, upstream_host: str, upstream_port: int, *, rate: float | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rate = rate
        self.port = free_port()
        self.connections = 0
        self.cuts_done = 0
        self.client_bytes = 0  # client -> server, all connections
        self._cuts_left = 0
        self._cut_after = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    def cut_fetches(self, count: int, after_bytes: int) -> None:
        with self._lock:
            self._cuts_left, self._cut_after = count, after_bytes

    def _take_cut(self) -> int | None:
        with self._lock:
            if self._cuts_left <= 0:
                return None
            self._cuts_left -= 1
            return self._cut_after

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, self.host, self.port), self._loop
        ).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        state = {"fetching": False, "cut_at": None, "sent": 0}
        done = asyncio.Event()

        async def client_to_server() -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await reader.read(65_536):
                    if not state["fetching"] and FETCH_BODY in data:
                        state["fetching"] = True
                        state["cut_at"] = self._take_cut()
                    self.client_bytes += len(data)
                    up_writer.write(data)
                    await up_writer.drain()
            done.set()

        async def server_to_client() -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await up_reader.read(4_096):
                    cut_at = state["cut_at"]
                    if state["fetching"] and cut_at is not None:
                        room = cut_at - state["sent"]
                        if room <= len(data):
                            writer.write(data[: max(room, 0)])
                            with contextlib.suppress(OSError):
                                await writer.drain()
                            self.cuts_done += 1
                            break
                        state["sent"] += len(data)
                    writer.write(data)
                    await writer.drain()
                    if self.rate:
                        await asyncio.sleep(len(data) / self.rate)
            done.set()

        tasks = [asyncio.create_task(client_to_server()), asyncio.create_task(server_to_client())]
        try:
            await done.wait()
        finally:
            for task in tasks:
                task.cancel()
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.transport.abort()


# --- `faststream run` service processes --------------------------------------------------------


class ServiceProcess:
    """One service as a `faststream run` subprocess with its own port and log file."""

    def __init__(self, target: str, env: dict[str, str], log: Path, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.log = log
        self.proc = spawn(
            [sys.executable, "-m", "faststream", "run", target, "--port", str(self.port)],
            log_path=log,
            env=env,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, **headers: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            while True:
                assert self.alive(), f"{self.name} died at start:\n{self.tail()}"
                assert time.monotonic() < deadline, f"{self.name} not ready in {timeout}s:\n{self.tail()}"
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.3)

    async def metrics(self) -> dict[str, float]:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            return parse_metrics((await client.get("/metrics")).text)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self) -> None:
        stop(self.proc, timeout=30)


@contextlib.contextmanager
def services(*procs: ServiceProcess) -> Iterator[tuple[ServiceProcess, ...]]:
    """Terminate (SIGTERM, then SIGKILL) every process on the way out, whatever happened."""
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()


def base_env(kafka_broker: object, unique: object, data_dir: Path, database_url: str) -> dict[str, str]:
    env = {
        **os.environ,
        "MAILSVC_DATA_DIR": str(data_dir),
        "MAILSVC_DATABASE_URL": database_url,
        "MAILSVC_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,  # type: ignore[attr-defined]
        "MAILSVC_KAFKA_TOPIC_PREFIX": unique.prefix,  # type: ignore[attr-defined]
        "MAILSVC_KAFKA_GROUP_PREFIX": unique.id,  # type: ignore[attr-defined]
        "MAILSVC_KAFKA_PARTITIONS": "3",
        "MAILSVC_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "MAILSVC_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
    }
    return env


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value} (labels as written by the client)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            found[f"{match[1]}{match[2] or ''}"] = float(match[3])
    return found


def metric(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total
