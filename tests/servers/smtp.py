"""SMTP servers that accept mail on 127.0.0.1.

``SmtpSink`` (aiosmtpd, in-process): records every message and can answer per message or
per recipient with any code, or drop the connection. ~1k msg/s: for tests.
``PostfixSmtpSink`` (/usr/sbin/smtp-sink): fast C sink for benchmarks, optional counter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.servers.procs import Server, ServerError, free_port, read_greeting, spawn, stop, wait_until

# aiosmtpd warns on every connection when AUTH is required without TLS: fine on loopback.
warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)

OK = "250 2.0.0 OK"
DROP = "DROP"  # a hook returning this closes the connection without any reply


@dataclasses.dataclass(frozen=True)
class SmtpMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    reply: str = OK  # what the sink answered to DATA

    @property
    def accepted(self) -> bool:
        return self.reply.startswith("250")

    @property
    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


# hook(message) -> None/"250 ..." accept, "451 ..."/"550 ..." any reply, DROP: hang up.
DataHook = Callable[[SmtpMessage], str | None]
RcptHook = Callable[[str], str | None]


def replies(*answers: str | None) -> DataHook:
    """A DataHook answering ``answers`` in turn to successive messages, then accepting all."""
    pending = list(answers)
    lock = threading.Lock()

    def hook(_: SmtpMessage) -> str | None:
        with lock:
            return pending.pop(0) if pending else None

    return hook


def _hang_up(server: SMTP) -> str:
    transport = server.transport
    assert isinstance(transport, asyncio.Transport)
    transport.abort()
    return "421 4.4.2 dropped"  # never sent: the transport is gone


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        hook = self.sink.rcpt_hook
        answer = hook(address) if hook else None
        if answer == DROP:
            return _hang_up(server)
        if answer and not answer.startswith("250"):
            return answer
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        assert isinstance(content, bytes)
        msg = SmtpMessage(envelope.mail_from or "", tuple(envelope.rcpt_tos), content)
        hook = self.sink.hook
        answer = (hook(msg) if hook else None) or OK
        self.sink._record(dataclasses.replace(msg, reply=answer))
        if answer == DROP:
            return _hang_up(server)
        return answer


class SmtpSink(Server):
    """aiosmtpd on 127.0.0.1:``port``, recording every DATA in ``messages`` (with its reply).

    ``hook`` / ``rcpt_hook`` may be (re)assigned at any time; see DataHook/RcptHook.
    ``users``: require AUTH PLAIN/LOGIN (no TLS) with these credentials.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        hook: DataHook | None = None,
        *,
        rcpt_hook: RcptHook | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        self.hook = hook
        self.rcpt_hook = rcpt_hook
        self.users = dict(users) if users else None
        self.port = free_port()
        self._messages: list[SmtpMessage] = []
        self._cond = threading.Condition()
        kwargs: dict[str, Any] = {}
        if self.users:
            kwargs = {"authenticator": self._authenticate, "auth_required": True, "auth_require_tls": False}
        self._controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, enable_SMTPUTF8=True, **kwargs
        )
        self._running = False

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self.users is not None
            and self.users.get(data.login.decode()) == data.password.decode()
        )
        return AuthResult(success=ok, handled=False)

    def _record(self, msg: SmtpMessage) -> None:
        with self._cond:
            self._messages.append(msg)
            self._cond.notify_all()

    @property
    def messages(self) -> list[SmtpMessage]:
        """Every message that reached DATA, including rejected ones (see ``.reply``)."""
        with self._cond:
            return list(self._messages)

    @property
    def accepted(self) -> list[SmtpMessage]:
        return [m for m in self.messages if m.accepted]

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()

    def wait_for(self, count: int, timeout: float = 10.0, *, accepted: bool = True) -> list[SmtpMessage]:
        """Block until ``count`` (accepted) messages arrived; return them. TimeoutError if not."""

        def matching() -> list[SmtpMessage]:
            return [m for m in self._messages if m.accepted or not accepted]

        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= count, timeout):
                raise TimeoutError(f"{len(matching())} of {count} messages after {timeout} s")
            return matching()

    def start(self) -> None:
        if not self._running:
            self._controller.start()
            self._running = True

    def stop(self) -> None:
        if self._running:
            self._controller.stop()
            self._running = False

    close = stop


class PostfixSmtpSink(Server):
    """Postfix's smtp-sink on 127.0.0.1:``port``: accepts everything, stores nothing.

    ``count=True`` runs it with -c; ``received()`` then returns the number of messages.
    ``extra_args`` go before the address, e.g. ("-w", "1") to delay DATA replies by 1 s.
    """

    host = "127.0.0.1"

    def __init__(self, *, count: bool = True, backlog: int = 256, extra_args: Iterable[str] = ()) -> None:
        self.count = count
        self.backlog = backlog
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="smtp-sink-"))
        self.log_path = self.dir / "smtp-sink.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self._proc is not None:
            return
        binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        argv = [binary, *(["-c"] if self.count else []), *self.extra_args]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]  # required as root
        argv += [f"{self.host}:{self.port}", str(self.backlog)]
        t0 = time.monotonic()
        self._proc = spawn(argv, log_path=self.log_path, cwd=self.dir)
        try:
            wait_until(
                lambda: read_greeting(self.host, self.port, b"220"),
                what=f"smtp-sink on {self.port}",
                timeout=10,
                proc=self._proc,
                log_path=self.log_path,
            )
        except ServerError:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        print(f"[servers] smtp-sink ready on {self.port} in {self.startup_seconds:.2f} s", file=sys.stderr)

    def received(self) -> int:
        """Messages received so far (needs ``count=True``); -c prints "sess=N quit=N mesg=N\\r"."""
        if not self.count:
            raise ServerError("PostfixSmtpSink(count=False) does not count")
        with open(self.log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            found = re.findall(rb"mesg=(\d+)", f.read())
        return int(found[-1]) if found else 0

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop(proc)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
