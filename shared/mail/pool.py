"""A pool of reusable, authenticated SMTP sessions to one relay.

Up to ``size`` sessions are opened lazily and reused for many messages; a session is closed
(QUIT) after ``max_messages_per_connection`` transactions or ``idle_timeout_s`` without use,
and dropped as soon as it breaks. The pool never retries a message: the one exception is a
reused idle session found dead before MAIL FROM was accepted (nothing was sent), which is
replaced by a fresh one transparently.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from types import TracebackType
from typing import Self

from shared.mail.smtp import (
    ConnectionFailed,
    Handover,
    RelayConfig,
    SendResult,
    SmtpConnection,
    StaleConnection,
    open_connection,
    tls_context,
)
from shared.settings import TlsMode

log = logging.getLogger(__name__)


class SmtpPool:
    def __init__(
        self,
        relay: RelayConfig,
        size: int = 4,
        max_messages_per_connection: int = 1000,
        idle_timeout_s: float = 60,
    ) -> None:
        if size < 1 or max_messages_per_connection < 1 or idle_timeout_s <= 0:
            raise ValueError("size and max_messages_per_connection must be >= 1, idle_timeout_s > 0")
        self.relay = relay
        self.size = size
        self.max_messages_per_connection = max_messages_per_connection
        self.idle_timeout_s = idle_timeout_s
        self.connections_opened = 0
        self._permits = asyncio.Semaphore(size)  # one per session in use or being opened
        self._idle: deque[SmtpConnection] = deque()  # most recently used on the right
        self._tls: ssl.SSLContext | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    async def send(
        self,
        message: bytes,
        sender: str,
        recipients: list[str],
        on_handover: Handover | None = None,
    ) -> SendResult:
        """Send one message on a pooled session. Never raises for SMTP or network outcomes (see
        ``SendResult``); ``on_handover`` is awaited after the body, before the final dot."""
        if self._closed:
            raise RuntimeError("SmtpPool is closed")
        async with self._permits:
            if self._closed:
                raise RuntimeError("SmtpPool is closed")
            idle = self._take_idle()
            if idle is not None:
                try:
                    return await self._transact(idle, message, sender, recipients, on_handover)
                except StaleConnection:
                    log.debug("reused SMTP session to %s was dead: reconnecting", self.relay.address)
            try:
                fresh = await self._open()
            except ConnectionFailed as exc:
                return exc.result
            return await self._transact(fresh, message, sender, recipients, on_handover)

    async def _transact(
        self,
        connection: SmtpConnection,
        message: bytes,
        sender: str,
        recipients: list[str],
        on_handover: Handover | None,
    ) -> SendResult:
        try:
            return await connection.send(message, sender, recipients, on_handover)
        finally:
            self._check_in(connection)

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def close(self) -> None:
        """Wait for sends in progress, then QUIT every session. Later sends raise RuntimeError."""
        if self._closed:
            return
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        for _ in range(self.size):  # every permit back: no send in progress any more
            await self._permits.acquire()
        while self._idle:
            self._retire(self._idle.pop())
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _open(self) -> SmtpConnection:
        if self._tls is None and self.relay.tls is not TlsMode.NONE:
            self._tls = tls_context(self.relay)  # loading the trust store costs milliseconds
        connection = await open_connection(self.relay, self._tls)
        self.connections_opened += 1
        return connection

    def _take_idle(self) -> SmtpConnection | None:
        deadline = time.monotonic() - self.idle_timeout_s
        while self._idle:
            connection = self._idle.pop()
            if connection.usable and connection.last_used > deadline:
                return connection
            self._retire(connection)
        return None

    def _check_in(self, connection: SmtpConnection) -> None:
        if not connection.usable:
            connection.abort()
        elif self._closed or connection.transactions >= self.max_messages_per_connection:
            self._retire(connection)
        else:
            self._idle.append(connection)
            if self._reaper is None or self._reaper.done():
                self._reaper = asyncio.create_task(self._reap())

    def _retire(self, connection: SmtpConnection) -> None:
        """QUIT in the background; ``close()`` waits for it."""
        if not connection.usable:
            connection.abort()
            return
        task = asyncio.create_task(connection.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _reap(self) -> None:
        """Close sessions idle for longer than idle_timeout_s; ends when none is left idle."""
        while self._idle:
            oldest = self._idle[0].last_used
            await asyncio.sleep(max(oldest + self.idle_timeout_s - time.monotonic(), 0) + 0.01)
            deadline = time.monotonic() - self.idle_timeout_s
            while self._idle and (self._idle[0].last_used <= deadline or not self._idle[0].usable):
                self._retire(self._idle.popleft())
