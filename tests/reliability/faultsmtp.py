"""A fault-injecting SMTP server on 127.0.0.1 (aiosmtpd, in its own thread) for reliability tests.

Faults are chosen per recipient by a hash of (seed, address), so a run is reproducible and the
test knows in advance which recipient gets which fault:

- ``temp``: "451 4.7.1" to RCPT TO on the first attempt, accepted afterwards (greylisting);
- ``perm``: "550 5.1.1" to RCPT TO on every attempt (unknown user);
- ``reset``: on the first attempt, after 354 the server reads part of the message, then
  closes the connection without a reply (the final dot is never processed);
- ``stall``: on the first attempt, RCPT TO gets no answer for ``stall_s`` seconds (longer than the
  client's command timeout), then the connection is closed;
- ``drop``: on the first attempt, the whole message including the final dot is read, then the
  connection is closed without a reply and without keeping the message (a relay that crashed
  before it committed the message).

Every accepted message is recorded with its recipient and accept time (``time.monotonic()``)
for rate and duplicate checks: ``accepts``, ``accepted_counts()``, ``wait_accepted()``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.servers.procs import Server, free_port

Fault = Literal["temp", "perm", "reset", "stall", "drop"]
TEMP_REPLY = "451 4.7.1 Greylisted, try again later"
PERM_REPLY = "550 5.1.1 No such user here"
RESET_AFTER_BYTES = 200  # of message data read before the connection is closed


@dataclasses.dataclass(frozen=True)
class FaultPlan:
    """Fractions of recipients per fault (the rest is accepted at once); ``seed`` varies the draw."""

    temp: float = 0.0
    perm: float = 0.0
    reset: float = 0.0
    stall: float = 0.0
    drop: float = 0.0
    seed: str = "faultsmtp"

    def __post_init__(self) -> None:
        if min(self.temp, self.perm, self.reset, self.stall, self.drop) < 0 or self.total > 1:
            raise ValueError("fault fractions must be >= 0 and sum to at most 1")

    @property
    def total(self) -> float:
        return self.temp + self.perm + self.reset + self.stall + self.drop

    def fault(self, recipient: str) -> Fault | None:
        digest = hashlib.sha256(f"{self.seed}\0{recipient.lower()}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        for name in ("perm", "temp", "reset", "stall", "drop"):
            share = getattr(self, name)
            if draw < share:
                return name  # type: ignore[return-value]
            draw -= share
        return None


@dataclasses.dataclass(frozen=True)
class Accept:
    recipient: str
    at: float  # time.monotonic() when the final dot was answered with 250
    size: int


class _Handler:
    def __init__(self, server: FaultSmtp) -> None:
        self.server = server

    async def handle_EHLO(
        self, smtp: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves this to a handler that has the hook
        responses.insert(-1, "250-PIPELINING")  # as real relays: faults hit pipelined sessions
        return responses

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        server = self.server
        fault, first = server._rcpt_attempt(address)
        if fault == "perm":
            server._count("perm")
            return PERM_REPLY
        if first and fault == "temp":
            server._count("temp")
            return TEMP_REPLY
        if first and fault == "stall":
            server._count("stall")
            await asyncio.sleep(server.stall_s)
            transport = smtp.transport
            if transport is not None:
                transport.abort()
            return "421 4.4.2 stalled"  # never sent: the transport is gone
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        assert isinstance(content, bytes)
        if self.server._take_drop(list(envelope.rcpt_tos)):
            transport = smtp.transport
            if transport is not None:
                transport.abort()
            return "421 4.4.2 dropped"  # never sent: the transport is gone
        self.server._accept(list(envelope.rcpt_tos), len(content))
        return "250 2.0.0 OK queued"


class _FaultSMTP(SMTP):
    def __init__(self, server: FaultSmtp, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.fault_server = server

    async def smtp_DATA(self, arg: str) -> None:
        rcpts = list(self.envelope.rcpt_tos) if self.envelope else []
        if arg or not rcpts or not self.fault_server._take_reset(rcpts):
            return await super().smtp_DATA(arg)
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        received = b""
        while len(received) < RESET_AFTER_BYTES:
            chunk = await self._reader.read(RESET_AFTER_BYTES - len(received))
            if not chunk:
                break
            received += chunk
        transport = self.transport
        if transport is not None:
            transport.abort()
        return None


class _Controller(Controller):
    def __init__(self, server: FaultSmtp, **kwargs: Any) -> None:
        super().__init__(_Handler(server), **kwargs)
        self.fault_server = server

    def factory(self) -> SMTP:
        self.fault_server.connections += 1
        return _FaultSMTP(self.fault_server, self.handler, **self.SMTP_kwargs)


class FaultSmtp(Server):
    """aiosmtpd on 127.0.0.1:``port`` injecting the faults of ``plan`` (see the module docstring)."""

    host = "127.0.0.1"

    def __init__(self, plan: FaultPlan | None = None, *, stall_s: float = 5.0) -> None:
        self.plan = plan or FaultPlan()
        self.stall_s = stall_s
        self.port = free_port()
        self.connections = 0
        self.injected: Counter[str] = Counter()  # fault name -> times injected
        self._attempts: Counter[str] = Counter()  # recipient -> RCPT TO commands seen
        self._resets_done: set[str] = set()
        self._drops_done: set[str] = set()
        self._accepts: list[Accept] = []
        self._cond = threading.Condition()
        self._controller = _Controller(self, hostname=self.host, port=self.port, enable_SMTPUTF8=True)
        self._running = False

    # -- called from the server thread ----------------------------------------------------------

    def _rcpt_attempt(self, address: str) -> tuple[Fault | None, bool]:
        with self._cond:
            self._attempts[address] += 1
            return self.plan.fault(address), self._attempts[address] == 1

    def _take_reset(self, rcpts: list[str]) -> bool:
        """True once per recipient planned for ``reset`` (its first DATA)."""
        with self._cond:
            due = [r for r in rcpts if self.plan.fault(r) == "reset" and r not in self._resets_done]
            self._resets_done.update(due)
            if due:
                self.injected["reset"] += 1
            return bool(due)

    def _take_drop(self, rcpts: list[str]) -> bool:
        """True once per recipient planned for ``drop`` (its first complete message)."""
        with self._cond:
            due = [r for r in rcpts if self.plan.fault(r) == "drop" and r not in self._drops_done]
            self._drops_done.update(due)
            if due:
                self.injected["drop"] += 1
            return bool(due)

    def _count(self, fault: str) -> None:
        with self._cond:
            self.injected[fault] += 1

    def _accept(self, rcpts: list[str], size: int) -> None:
        moment = time.monotonic()
        with self._cond:
            self._accepts.extend(Accept(r, moment, size) for r in rcpts)
            self._cond.notify_all()

    # -- for the test -----------------------------------------------------------------------------

    @property
    def accepts(self) -> list[Accept]:
        with self._cond:
            return list(self._accepts)

    def accepted_counts(self) -> Counter[str]:
        """Recipient -> messages accepted for it (more than 1 = a duplicate)."""
        return Counter(a.recipient for a in self.accepts)

    def wait_accepted(
        self, condition: Callable[[list[Accept]], bool], timeout: float, what: str = "condition"
    ) -> list[Accept]:
        """Block until ``condition(accepts)`` holds (re-checked on every accept); TimeoutError if not."""
        with self._cond:
            if not self._cond.wait_for(lambda: condition(self._accepts), timeout):
                raise TimeoutError(f"{what}: not reached in {timeout} s ({len(self._accepts)} accepted)")
            return list(self._accepts)

    def expected_final(self, recipients: list[str]) -> dict[str, str]:
        """The final delivery status each recipient must end with: "failed" for ``perm``, else "sent"."""
        return {r: "failed" if self.plan.fault(r) == "perm" else "sent" for r in recipients}

    def start(self) -> None:
        if not self._running:
            self._controller.start()
            self.connections = 0  # start() connects once to check the server
            self._running = True

    def stop(self) -> None:
        if self._running:
            self._controller.stop()
            self._running = False
