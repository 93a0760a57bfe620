"""RFC 2920 pipelining in SmtpConnection, against a scripted relay: replies read in order however
the network splits them, the body only after a 354 with a recipient accepted, and a relay left
waiting in DATA is hung up on instead of being sent an empty message. (The whole SMTP suite also
runs through aiosmtpd with and without PIPELINING: tests/integration/test_smtp_pool.py.)"""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest
from aiosmtplib.protocol import SMTPProtocol

from shared.mail.smtp import Outcome, RelayConfig, SmtpConnection, StaleConnection

MESSAGE = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: x\r\n\r\n.dot\r\nbody\r\n"
OK = {"MAIL": b"250 2.1.0 Ok\r\n", "RCPT": b"250 2.1.5 Ok\r\n", "DATA": b"354 go ahead\r\n"}


class PipeliningRelay(asyncio.Transport):
    """Answers a MAIL..DATA batch with scripted replies, split into chunks as ``split`` says,
    each chunk in a later loop iteration (as a socket's reads come); 250 after the final dot."""

    def __init__(self, protocol: SMTPProtocol, answers: dict[str, bytes], split: str) -> None:
        super().__init__()
        self.protocol, self.answers, self.split = protocol, answers, split
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))
        if data.startswith(b"MAIL"):
            lines = data.split(b"\r\n")[:-1]
            replies = [self.answers.get(line.split(b":")[0].split(b" ")[0].decode(), b"") for line in lines]
            self.deliver(replies)
        elif data == b".\r\n":
            self.deliver([b"250 2.0.0 queued as X\r\n"])
        elif data == b"RSET\r\n":
            self.deliver([b"250 2.0.0 Ok\r\n"])

    def deliver(self, replies: list[bytes]) -> None:
        whole = b"".join(replies)
        if self.split == "together":
            chunks = [whole]
        elif self.split == "apart":
            chunks = replies
        else:  # "bytes"
            chunks = [whole[i : i + 1] for i in range(len(whole))]
        loop = asyncio.get_running_loop()

        def feed(rest: list[bytes]) -> None:
            if rest and not self.closing:
                self.protocol.data_received(rest[0])
                loop.call_soon(feed, rest[1:])

        loop.call_soon(feed, chunks)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name, default=None):
        return default


def connection(answers: dict[str, bytes], split: str) -> tuple[SmtpConnection, PipeliningRelay]:
    protocol = SMTPProtocol(loop=asyncio.get_running_loop())
    relay = PipeliningRelay(protocol, answers, split)
    protocol.connection_made(relay)
    protocol._response_pending = False  # as after EHLO
    client = aiosmtplib.SMTP(hostname="relay.example.test", port=25)
    client.protocol = protocol
    client.esmtp_extensions = {"pipelining": ""}
    config = RelayConfig(host="relay.example.test", port=25, command_timeout_s=2)
    return SmtpConnection(config, client), relay


SPLITS = ["together", "apart", "bytes"]


@pytest.mark.parametrize("split", SPLITS)
async def test_commands_go_in_one_write_and_replies_are_read_however_they_arrive(split):
    conn, relay = connection(OK, split)
    handed: list[int] = []

    async def on_handover() -> None:
        handed.append(len(relay.written))

    result = await conn.send(MESSAGE, "a@example.test", ["b@example.test", "c@example.test"], on_handover)
    assert result.outcome is Outcome.SENT and result.code == 250 and result.handed_over
    assert relay.written[0] == (
        b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n"
    )
    assert relay.written[1].endswith(b"\r\n..dot\r\nbody\r\n") and relay.written[2] == b".\r\n"
    assert handed == [2]  # after the body, before the dot
    again = await conn.send(MESSAGE, "a@example.test", ["b@example.test"])
    assert again.outcome is Outcome.SENT and conn.usable


@pytest.mark.parametrize("split", SPLITS)
async def test_refused_recipients_are_reported_and_the_rest_get_the_message(split):
    answers = dict(OK, RCPT=b"550 5.1.1 no such user\r\n")
    conn, relay = connection(answers, split)
    result = await conn.send(MESSAGE, "a@example.test", ["gone@example.test"])
    assert result.outcome is Outcome.PERMANENT and not result.handed_over
    assert result.code == 550 and "gone@example.test" in result.refused
    # The relay answered DATA with 354 although no recipient was accepted: we hang up instead
    # of ending an empty message with a dot.
    assert b".\r\n" not in relay.written and not conn.usable


@pytest.mark.parametrize("split", SPLITS)
async def test_sender_refused_resets_and_sends_nothing(split):
    answers = dict(
        OK, MAIL=b"553 5.1.8 bad sender\r\n", RCPT=b"503 5.5.1 need MAIL\r\n", DATA=b"503 5.5.1 need RCPT\r\n"
    )
    conn, relay = connection(answers, split)
    result = await conn.send(MESSAGE, "bad@example.test", ["b@example.test"])
    assert (result.outcome, result.code, result.enhanced_code) == (Outcome.PERMANENT, 553, "5.1.8")
    assert relay.written[-1] == b"RSET\r\n" and conn.usable


async def test_a_reused_connection_closing_at_mail_from_is_stale():
    conn, relay = connection(OK, "together")
    assert (await conn.send(MESSAGE, "a@example.test", ["b@example.test"])).outcome is Outcome.SENT
    relay.answers = dict(OK, MAIL=b"421 4.4.2 closing\r\n", RCPT=b"", DATA=b"")
    with pytest.raises(StaleConnection):
        await conn.send(MESSAGE, "a@example.test", ["b@example.test"])
    assert not conn.usable
