"""SMTP servers that accept mail on 127.0.0.1.

``SmtpSink`` (aiosmtpd, in-process): records every message and can answer per message or
per recipient with any code, or drop the connection (also mid-DATA). Optional STARTTLS or
implicit TLS, AUTH PLAIN/LOGIN and XOAUTH2; counts connections. ~1k msg/s: for tests.
``PostfixSmtpSink`` (/usr/sbin/smtp-sink): fast C sink for benchmarks, optional counter.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import email
import email.policy
import json
import os
import re
import shutil
import ssl
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
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

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
    tls: bool = False  # the session was encrypted (STARTTLS or implicit TLS)
    mail_options: tuple[str, ...] = ()  # MAIL FROM parameters, e.g. ("SIZE=123", "BODY=8BITMIME")

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
MailHook = Callable[[str], str | None]  # same answers, to MAIL FROM (argument: the sender)


@dataclasses.dataclass(frozen=True)
class AuthAttempt:
    mechanism: str  # "PLAIN", "LOGIN", "XOAUTH2"
    login: str
    secret: bytes  # the password, or for XOAUTH2 the whole decoded initial response
    success: bool


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side context for SmtpSink(starttls=...) / SmtpSink(implicit_tls=...)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


_XOAUTH2 = re.compile(rb"user=([^\x01]*)\x01auth=Bearer ([^\x01]+)\x01\x01")
_XOAUTH2_ERROR = json.dumps({"status": "400", "schemes": "Bearer", "scope": "https://mail.google.com/"})


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

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """Like Gmail: a bad token gets a 334 JSON challenge, the client's empty line, then 535."""
        try:
            blob = base64.b64decode(args[1], validate=True) if len(args) == 2 else b""
        except binascii.Error:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode base64")
        match = _XOAUTH2.fullmatch(blob)
        login, token = (match.group(1).decode(), match.group(2).decode()) if match else ("", "")
        ok = bool(match) and self.sink.oauth_tokens.get(login) == token
        self.sink._record_auth(AuthAttempt("XOAUTH2", login, blob, ok))
        if ok:
            return AuthResult(success=True, auth_data=LoginPassword(login.encode(), token.encode()))
        if await server.challenge_auth(_XOAUTH2_ERROR) is MISSING:
            return AuthResult(success=False, handled=True)
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Username and Password not accepted"
        )

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves this to a handler that has the hook
        if self.sink.pipelining:  # aiosmtpd reads commands line by line, so it can take them
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        hook = self.sink.mail_hook
        answer = hook(address) if hook else None
        if answer == DROP:
            return _hang_up(server)
        if answer and not answer.startswith("250"):
            return answer
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

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
        transport = server.transport
        msg = SmtpMessage(
            envelope.mail_from or "",
            tuple(envelope.rcpt_tos),
            content,
            tls=transport is not None and transport.get_extra_info("sslcontext") is not None,
            mail_options=tuple(envelope.mail_options),
        )
        hook = self.sink.hook
        answer = (hook(msg) if hook else None) or OK
        self.sink._record(dataclasses.replace(msg, reply=answer))
        if answer == DROP:
            return _hang_up(server)
        return answer


class _SinkSMTP(SMTP):
    def __init__(self, sink: SmtpSink, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.sink = sink

    async def smtp_DATA(self, arg: str) -> None:
        cut = self.sink.drop_mid_data
        if cut is None or not self.envelope or not self.envelope.rcpt_tos or arg:
            return await super().smtp_DATA(arg)
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        received = b""
        while len(received) < cut and b"\r\n.\r\n" not in received[-65_540:]:
            chunk = await self._reader.read(min(65_536, cut - len(received)))
            if not chunk:
                break
            received += chunk
        self.sink.dropped_mid_data += 1
        _hang_up(self)
        return None


class _SinkController(Controller):
    def __init__(self, sink: SmtpSink, **kwargs: Any) -> None:
        super().__init__(_Handler(sink), **kwargs)
        self.sink = sink

    def factory(self) -> SMTP:
        self.sink._connections += 1  # one SMTP instance per connection
        return _SinkSMTP(self.sink, self.handler, **self.SMTP_kwargs)


class SmtpSink(Server):
    """aiosmtpd on 127.0.0.1:``port``, recording every DATA in ``messages`` (with its reply).

    ``hook`` / ``rcpt_hook`` / ``mail_hook`` may be (re)assigned at any time; see DataHook.
    ``drop_mid_data`` (assignable too): hang up after reading that many bytes of message data,
    before the final dot (the message must be longer); ``dropped_mid_data`` counts it.
    ``users``: require AUTH PLAIN/LOGIN with these credentials (also without TLS);
    ``oauth_tokens`` (user -> access token): require AUTH, offer and check XOAUTH2.
    Every AUTH attempt lands in ``auth_attempts``. ``starttls`` / ``implicit_tls``: a server
    context (see server_tls_context) to offer STARTTLS / to speak TLS from the first byte.
    ``connections``: client connections accepted since start(). ``idle_timeout_s``: hang up
    on clients silent that long (aiosmtpd's default: 300 s). ``pipelining``: advertise RFC 2920
    PIPELINING (as Postfix, Exchange and the big providers do), so clients send MAIL, RCPT and
    DATA in one go; False: clients send one command at a time.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        hook: DataHook | None = None,
        *,
        rcpt_hook: RcptHook | None = None,
        users: Mapping[str, str] | None = None,
        oauth_tokens: Mapping[str, str] | None = None,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
        idle_timeout_s: float | None = None,
        pipelining: bool = True,
    ) -> None:
        if starttls is not None and implicit_tls is not None:
            raise ValueError("starttls and implicit_tls are exclusive")
        self.hook = hook
        self.pipelining = pipelining
        self.rcpt_hook = rcpt_hook
        self.mail_hook: MailHook | None = None
        self.drop_mid_data: int | None = None
        self.dropped_mid_data = 0
        self.users = dict(users) if users else None
        self.oauth_tokens = dict(oauth_tokens) if oauth_tokens else {}
        self.auth_attempts: list[AuthAttempt] = []
        self.port = free_port()
        self._messages: list[SmtpMessage] = []
        self._connections = 0
        self._cond = threading.Condition()
        kwargs: dict[str, Any] = {"auth_exclude_mechanism": [] if self.oauth_tokens else ["XOAUTH2"]}
        if self.users or self.oauth_tokens:
            kwargs |= {"authenticator": self._authenticate, "auth_required": True, "auth_require_tls": False}
        if starttls is not None:
            kwargs["tls_context"] = starttls
        if idle_timeout_s is not None:
            kwargs["timeout"] = idle_timeout_s
        self._controller = _SinkController(
            self,
            hostname=self.host,
            port=self.port,
            enable_SMTPUTF8=True,
            ssl_context=implicit_tls,
            **kwargs,
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
        if isinstance(data, LoginPassword):
            self._record_auth(AuthAttempt(mechanism, data.login.decode(), data.password, ok))
        return AuthResult(success=ok, handled=False)

    def _record_auth(self, attempt: AuthAttempt) -> None:
        with self._cond:
            self.auth_attempts.append(attempt)

    @property
    def connections(self) -> int:
        """Client connections accepted since start() (aiosmtpd's own start-up probe excluded)."""
        return self._connections

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
            self._connections = 0  # start() itself connects once, to check the server
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
