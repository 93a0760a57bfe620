"""Mail parsing in worker processes, so it runs beside the IMAP and database work of the
account threads instead of holding the GIL they need.

One pool per scanner process (shared by all accounts), started with the service (or by the
first batch after it was stopped) with the ``spawn`` method: forking a process that runs
threads and an event loop is not safe. Workers exit by themselves when the scanner process is
gone (even after SIGKILL), so no orphans pile up. If the pool cannot start or breaks (a worker
killed), parsing falls back to the calling thread and the pool is started afresh for the next
batch: the result is the same, only slower.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from services.mail_scanner.facts import MailFacts, parse_for_import

log = logging.getLogger(__name__)
WORKERS = max(1, min(2, os.cpu_count() or 1))
TASK_MAILS = 25  # mails per task: few round trips, yet both workers get work from a batch

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(1.0)


def _init_worker(parent: int) -> None:
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def parse_many(raws: list[bytes], prefix: str) -> list[MailFacts | None]:
    """In a worker: the facts of each mail, None where parsing failed (the import parses it
    again and records the failure)."""
    found: list[MailFacts | None] = []
    for raw in raws:
        try:
            found.append(parse_for_import(raw, prefix))
        except Exception:
            found.append(None)
    return found


def _get_pool() -> ProcessPoolExecutor | None:
    global _pool
    with _lock:
        if _pool is None:
            try:
                _pool = ProcessPoolExecutor(
                    max_workers=WORKERS,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(os.getpid(),),
                )
            except Exception as exc:  # no processes allowed here: parse in the thread
                log.warning("mail scanner: no parse worker processes (%s); parsing in-thread", exc)
                return None
        return _pool


def _discard(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


def warm_up() -> None:
    """Start the workers now (their imports take a moment), not with the first batch."""
    pool = _get_pool()
    if pool is not None:
        try:
            for future in [pool.submit(parse_many, [], "") for _ in range(WORKERS)]:
                future.result(timeout=120)
        except Exception:
            _discard(pool)


class Parsing:
    """The parse of one batch, running in the pool; :meth:`result` waits for it."""

    def __init__(self, raws: list[bytes], prefix: str) -> None:
        self.raws = raws
        self.prefix = prefix
        self.pool = _get_pool()
        self.futures: list[Future[list[MailFacts | None]]] = []
        if self.pool is None:
            return
        try:
            for start in range(0, len(raws), TASK_MAILS):
                self.futures.append(self.pool.submit(parse_many, raws[start : start + TASK_MAILS], prefix))
        except (BrokenProcessPool, RuntimeError):
            _discard(self.pool)
            self.futures = []

    def result(self) -> list[MailFacts | None]:
        if not self.futures:
            return [None] * len(self.raws)  # the import parses them itself
        found: list[MailFacts | None] = []
        try:
            for future in self.futures:
                found.extend(future.result())
        except Exception:  # a worker died, or the pool was shut down meanwhile
            log.warning("mail scanner: parse workers unavailable; parsing this batch in-thread")
            if self.pool is not None:
                _discard(self.pool)
            return [None] * len(self.raws)
        return found


def shutdown(wait: bool = False) -> None:
    """Stop the workers (a later batch starts new ones); ``wait`` for them to exit."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=wait, cancel_futures=True)
