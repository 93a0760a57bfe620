"""SmtpPool and send_once against the aiosmtpd sink: reuse, classification, hand-over, TLS, AUTH;
with and without PIPELINING."""

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest

from shared.mail.pool import SmtpPool
from shared.mail.smtp import Outcome, RelayConfig, send_once
from shared.settings import TlsMode
from tests.servers.smtp import DROP, SmtpSink, replies, server_tls_context
from tests.servers.tls import self_signed_cert

SENDER = "mailer@example.test"


def mail(n: int | str = 0, body: bytes = b"Hello.\r\n") -> bytes:
    return (
        b"From: mailer@example.test\r\nTo: rcpt@example.test\r\n"
        b"Subject: pool test\r\nX-Test-Id: %s\r\n\r\n%s" % (str(n).encode(), body)
    )


def id_of(msg) -> str:
    return msg.message["X-Test-Id"]


def relay_for(sink: SmtpSink, **kwargs) -> RelayConfig:
    return RelayConfig(host=sink.host, port=sink.port, local_hostname="client.example.test", **kwargs)


@pytest.fixture(params=[True, False], ids=["pipelining", "one-command-at-a-time"])
def smtp_sink(request) -> Iterator[SmtpSink]:
    """This module runs every sink test against a relay with and without RFC 2920 PIPELINING."""
    with SmtpSink(pipelining=request.param) as sink:
        yield sink


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("certs"))


async def test_2000_messages_over_4_connections_arrive_exactly_once(smtp_sink):
    async with SmtpPool(relay_for(smtp_sink), size=4) as pool:
        results = await asyncio.gather(
            *(pool.send(mail(n), SENDER, ["rcpt@example.test"]) for n in range(2000))
        )
        assert pool.connections_opened == 4
    assert {r.outcome for r in results} == {Outcome.SENT}
    assert all(r.handed_over and r.code == 250 for r in results)
    received = Counter(id_of(m) for m in smtp_sink.wait_for(2000, timeout=30))
    assert received == Counter(str(n) for n in range(2000))
    assert len(smtp_sink.messages) == 2000
    assert smtp_sink.connections <= 4


async def test_451_is_retryable_and_the_callers_retry_succeeds_on_the_same_connection(smtp_sink):
    smtp_sink.hook = replies("451 4.3.0 Try again later")
    async with SmtpPool(relay_for(smtp_sink)) as pool:
        first = await pool.send(mail(1), SENDER, ["rcpt@example.test"])
        assert first.outcome is Outcome.RETRYABLE
        assert (first.code, first.enhanced_code, first.handed_over) == (451, "4.3.0", True)
        assert "Try again later" in first.detail
        second = await pool.send(mail(1), SENDER, ["rcpt@example.test"])
        assert second.outcome is Outcome.SENT and second.code == 250
    assert [m.reply[:3] for m in smtp_sink.messages] == ["451", "250"]
    assert smtp_sink.connections == 1  # RSET, then reused


async def test_550_is_permanent_with_its_enhanced_code(smtp_sink):
    smtp_sink.hook = replies("550 5.7.1 Message rejected by policy")
    async with SmtpPool(relay_for(smtp_sink)) as pool:
        result = await pool.send(mail(), SENDER, ["rcpt@example.test"])
        assert result.outcome is Outcome.PERMANENT
        assert (result.code, result.enhanced_code) == (550, "5.7.1")
        assert (await pool.send(mail(), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT
    assert smtp_sink.connections == 1


async def test_partial_recipient_refusals_are_reported_and_the_rest_get_the_message(smtp_sink):
    answers = {"gone@example.test": "550 5.1.1 No such user", "busy@example.test": "452 4.2.2 Mailbox full"}
    smtp_sink.rcpt_hook = answers.get
    recipients = ["a@example.test", "gone@example.test", "busy@example.test", "b@example.test"]
    async with SmtpPool(relay_for(smtp_sink)) as pool:
        result = await pool.send(mail(), SENDER, recipients)
        assert result.outcome is Outcome.SENT and result.handed_over
        assert result.refused["gone@example.test"] == (550, "5.1.1 No such user", "5.1.1")
        assert result.refused["busy@example.test"].code == 452
        assert result.refused["busy@example.test"].enhanced_code == "4.2.2"
        assert set(result.refused) == {"gone@example.test", "busy@example.test"}
        [msg] = smtp_sink.wait_for(1)
        assert msg.rcpt_tos == ("a@example.test", "b@example.test")

        permanent = await pool.send(mail(), SENDER, ["gone@example.test"])
        assert permanent.outcome is Outcome.PERMANENT and not permanent.handed_over
        assert (permanent.code, permanent.enhanced_code) == (550, "5.1.1")
        mixed = await pool.send(mail(), SENDER, ["gone@example.test", "busy@example.test"])
        assert mixed.outcome is Outcome.RETRYABLE and mixed.code == 452
        assert set(mixed.refused) == {"gone@example.test", "busy@example.test"}
        assert (await pool.send(mail(), SENDER, ["a@example.test"])).outcome is Outcome.SENT
    assert len(smtp_sink.messages) == 2 and smtp_sink.connections == 1


async def test_sender_refused(smtp_sink):
    smtp_sink.mail_hook = lambda sender: "553 5.1.8 Bad sender" if sender.startswith("bad") else None
    async with SmtpPool(relay_for(smtp_sink)) as pool:
        result = await pool.send(mail(), "bad@example.test", ["rcpt@example.test"])
        assert (result.outcome, result.code, result.enhanced_code) == (Outcome.PERMANENT, 553, "5.1.8")
        assert (await pool.send(mail(), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT


async def test_connection_dropped_mid_data_is_retryable_not_handed_over_and_the_pool_recovers(smtp_sink):
    handovers = []

    async def on_handover() -> None:
        handovers.append(1)

    smtp_sink.drop_mid_data = 64 * 1024
    big = mail("big", (b"y" * 998 + b"\r\n") * 16_000)  # 16 MB: cannot all sit in socket buffers
    async with SmtpPool(relay_for(smtp_sink), size=1) as pool:
        result = await pool.send(big, SENDER, ["rcpt@example.test"], on_handover=on_handover)
        assert result.outcome is Outcome.RETRYABLE
        assert result.handed_over is False and result.code is None
        assert "during DATA" in result.detail
        assert handovers == [] and smtp_sink.dropped_mid_data == 1
        smtp_sink.drop_mid_data = None
        again = await pool.send(mail(2), SENDER, ["rcpt@example.test"], on_handover=on_handover)
        assert again.outcome is Outcome.SENT and handovers == [1]
    assert [id_of(m) for m in smtp_sink.messages] == ["2"]
    assert smtp_sink.connections == 2


async def test_connection_dropped_after_the_final_dot_counts_as_handed_over(smtp_sink):
    smtp_sink.hook = replies(DROP)
    async with SmtpPool(relay_for(smtp_sink), size=1) as pool:
        result = await pool.send(mail(1), SENDER, ["rcpt@example.test"])
        assert result.outcome is Outcome.RETRYABLE and result.handed_over is True
        assert result.code is None
        assert (await pool.send(mail(2), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT
    assert smtp_sink.connections == 2


async def test_on_handover_runs_once_per_message_before_the_relay_sees_the_end_of_data(smtp_sink):
    events: list[tuple[str, str]] = []
    smtp_sink.hook = lambda msg: events.append(("relay", id_of(msg)))

    def handover(n: int):
        async def on_handover() -> None:
            events.append(("handover", str(n)))
            await asyncio.sleep(0.01)  # like a database commit: the relay must still be waiting
            assert ("relay", str(n)) not in events

        return on_handover

    async with SmtpPool(relay_for(smtp_sink), size=3) as pool:
        results = await asyncio.gather(
            *(pool.send(mail(n), SENDER, ["rcpt@example.test"], on_handover=handover(n)) for n in range(30))
        )
    assert all(r.outcome is Outcome.SENT for r in results)
    assert Counter(events) == Counter(
        [("handover", str(n)) for n in range(30)] + [("relay", str(n)) for n in range(30)]
    )
    for n in range(30):
        assert events.index(("handover", str(n))) < events.index(("relay", str(n)))


async def test_on_handover_is_not_called_when_nothing_is_sent_and_its_error_aborts_the_message(smtp_sink):
    calls = []

    async def record() -> None:
        calls.append(1)

    async def fail() -> None:
        raise RuntimeError("database down")

    smtp_sink.rcpt_hook = lambda rcpt: "550 5.1.1 No such user"
    async with SmtpPool(relay_for(smtp_sink), size=1) as pool:
        assert (
            await pool.send(mail(), SENDER, ["x@example.test"], on_handover=record)
        ).outcome is Outcome.PERMANENT
        assert calls == []
        smtp_sink.rcpt_hook = None
        with pytest.raises(RuntimeError, match="database down"):
            await pool.send(mail(1), SENDER, ["rcpt@example.test"], on_handover=fail)
        assert (await pool.send(mail(2), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT
    await asyncio.sleep(0.05)
    assert [id_of(m) for m in smtp_sink.messages] == ["2"]  # the aborted DATA never completed


async def test_a_reused_connection_that_died_before_mail_from_is_replaced_transparently(smtp_sink):
    async with SmtpPool(relay_for(smtp_sink), size=1) as pool:
        assert (await pool.send(mail(1), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT
        smtp_sink.mail_hook = replies(DROP)  # the idle connection is found dead at MAIL FROM
        assert (await pool.send(mail(2), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT
        smtp_sink.mail_hook = replies("421 4.4.2 Idle too long, closing")
        assert (await pool.send(mail(3), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT
        assert pool.connections_opened == 3
    assert [id_of(m) for m in smtp_sink.messages] == ["1", "2", "3"]


async def test_a_fresh_connection_failing_at_mail_from_is_not_retried(smtp_sink):
    smtp_sink.mail_hook = replies(DROP)
    async with SmtpPool(relay_for(smtp_sink)) as pool:
        result = await pool.send(mail(1), SENDER, ["rcpt@example.test"])
        assert result.outcome is Outcome.RETRYABLE and not result.handed_over
        assert "MAIL FROM" in result.detail
        assert pool.connections_opened == 1
    assert smtp_sink.messages == []


async def test_idle_connection_closed_by_the_server_is_discarded():
    with SmtpSink(idle_timeout_s=0.5) as sink:
        async with SmtpPool(relay_for(sink), size=1) as pool:
            assert (await pool.send(mail(1), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT
            await asyncio.sleep(1.0)  # the sink says "421 timeout" and hangs up
            assert (await pool.send(mail(2), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT
            assert pool.connections_opened == 2
        assert [id_of(m) for m in sink.messages] == ["1", "2"]


async def test_connections_are_recycled_after_max_messages_and_idle_timeout(smtp_sink):
    async with SmtpPool(
        relay_for(smtp_sink), size=1, max_messages_per_connection=3, idle_timeout_s=0.5
    ) as pool:
        for n in range(7):
            assert (await pool.send(mail(n), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT
        assert pool.connections_opened == 3
        assert pool.idle_connections == 1
        await asyncio.sleep(1.0)
        assert pool.idle_connections == 0  # closed by the reaper
        assert (await pool.send(mail(7), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT
        assert pool.connections_opened == 4
    assert smtp_sink.connections == 4 and len(smtp_sink.accepted) == 8


async def test_closed_pool_refuses_to_send(smtp_sink):
    pool = SmtpPool(relay_for(smtp_sink))
    assert (await pool.send(mail(), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT
    await pool.close()
    await pool.close()  # idempotent
    assert pool.idle_connections == 0
    with pytest.raises(RuntimeError, match="closed"):
        await pool.send(mail(), SENDER, ["rcpt@example.test"])


async def test_unreachable_relay_is_retryable():
    with SmtpSink() as sink:
        relay = relay_for(sink, connect_timeout_s=2)
    async with SmtpPool(relay) as pool:
        result = await pool.send(mail(), SENDER, ["rcpt@example.test"])
    assert result.outcome is Outcome.RETRYABLE and result.code is None
    assert f"cannot connect to relay {relay.host}:{relay.port}" in result.detail


async def test_message_bytes_are_sent_exactly_as_aiosmtplib_sends_them(smtp_sink):
    tricky = [
        b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend",
        b"Subject: bare LF\n\nline\nline\r\n.\n",
        b"Subject: bare CR\r\rline\rmore\r\n",
        "Subject: 8bit\r\n\r\nGr\u00fc\u00dfe, \u00e9t\u00e9\r\n".encode(),
        b"",
    ]
    async with SmtpPool(relay_for(smtp_sink)) as pool:
        for raw in tricky:
            assert (await pool.send(raw, SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT
            await aiosmtplib.send(
                raw,
                sender=SENDER,
                recipients=["rcpt@example.test"],
                hostname=smtp_sink.host,
                port=smtp_sink.port,
            )
    messages = smtp_sink.wait_for(2 * len(tricky))
    for i in range(len(tricky)):
        ours, theirs = messages[2 * i], messages[2 * i + 1]
        assert ours.data == theirs.data
    eight_bit = messages[6]
    assert "BODY=8BITMIME" in eight_bit.mail_options
    assert any(o.startswith("SIZE=") for o in messages[0].mail_options)


# --- TLS -------------------------------------------------------------------------------------


async def test_starttls_with_verification(certs):
    cert, key = certs
    with SmtpSink(starttls=server_tls_context(cert, key)) as sink:
        relay = relay_for(sink, tls=TlsMode.STARTTLS, ca_file=str(cert))
        async with SmtpPool(relay, size=2) as pool:
            for n in range(3):
                assert (await pool.send(mail(n), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT
        assert all(m.tls for m in sink.wait_for(3))
        assert (await send_once(relay, mail(9), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT


@pytest.mark.parametrize("mode", [TlsMode.STARTTLS, TlsMode.TLS])
async def test_untrusted_certificate_is_retryable_and_nothing_is_sent(certs, mode):
    cert, key = certs
    context = server_tls_context(cert, key)
    tls = {"starttls": context} if mode is TlsMode.STARTTLS else {"implicit_tls": context}
    with SmtpSink(**tls) as sink:
        result = await send_once(relay_for(sink, tls=mode), mail(), SENDER, ["rcpt@example.test"])
        assert result.outcome is Outcome.RETRYABLE and not result.handed_over
        assert "TLS certificate verification failed" in result.detail, result.detail
        # verification off only when explicitly configured
        relaxed = relay_for(sink, tls=mode, verify_tls=False)
        assert (await send_once(relaxed, mail(), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT
        assert len(sink.messages) == 1


async def test_starttls_required_but_not_offered_fails_instead_of_sending_in_clear(smtp_sink):
    async with SmtpPool(relay_for(smtp_sink, tls=TlsMode.STARTTLS)) as pool:
        result = await pool.send(mail(), SENDER, ["rcpt@example.test"])
    assert result.outcome is Outcome.RETRYABLE
    assert "does not offer STARTTLS" in result.detail
    assert smtp_sink.messages == []


async def test_implicit_tls(certs):
    cert, key = certs
    with SmtpSink(implicit_tls=server_tls_context(cert, key), users={"mailer": "s3cret"}) as sink:
        relay = relay_for(sink, tls=TlsMode.TLS, ca_file=str(cert), username="mailer", password="s3cret")
        async with SmtpPool(relay) as pool:
            assert (await pool.send(mail(), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT
        [msg] = sink.wait_for(1)
        assert msg.tls


# --- AUTH ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["plain", "login"])
async def test_auth_plain_and_login_once_per_connection(mechanism):
    with SmtpSink(users={"mailer": "s3cret"}) as sink:
        relay = relay_for(sink, auth=mechanism, username="mailer", password="s3cret")
        async with SmtpPool(relay, size=2) as pool:
            results = await asyncio.gather(
                *(pool.send(mail(n), SENDER, ["rcpt@example.test"]) for n in range(10))
            )
        assert {r.outcome for r in results} == {Outcome.SENT}
        assert len(sink.auth_attempts) == sink.connections <= 2
        assert {(a.mechanism, a.login, a.secret, a.success) for a in sink.auth_attempts} == {
            (mechanism.upper(), "mailer", b"s3cret", True)
        }


async def test_auth_defaults_to_plain_when_a_username_is_set():
    with SmtpSink(users={"mailer": "s3cret"}) as sink:
        relay = relay_for(sink, username="mailer", password="s3cret")
        assert relay.auth == "plain"
        assert (await send_once(relay, mail(), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT
        assert sink.auth_attempts[0].mechanism == "PLAIN"


@pytest.mark.parametrize("mechanism", ["plain", "login"])
async def test_wrong_password_is_permanent_and_never_shows_the_password(mechanism, caplog):
    caplog.set_level(logging.DEBUG)
    with SmtpSink(users={"mailer": "s3cret"}) as sink:
        relay = relay_for(sink, auth=mechanism, username="mailer", password="Wr0ngPassw0rd")
        async with SmtpPool(relay) as pool:
            result = await pool.send(mail(), SENDER, ["rcpt@example.test"])
        assert result.outcome is Outcome.PERMANENT
        assert (result.code, result.enhanced_code) == (535, "5.7.8")
        assert f"refused AUTH {mechanism.upper()} as 'mailer'" in result.detail
        for text in (result.detail, repr(result), repr(relay), str(relay), caplog.text):
            assert "Wr0ngPassw0rd" not in text
            assert "V3Iwbmdb" not in text  # base64 of it
        assert sink.messages == []


async def test_auth_mechanism_not_offered_is_permanent(smtp_sink):
    relay = relay_for(smtp_sink, username="mailer", password="s3cret")
    result = await send_once(relay, mail(), SENDER, ["rcpt@example.test"])
    assert result.outcome is Outcome.PERMANENT
    assert "does not offer AUTH PLAIN" in result.detail


async def test_xoauth2_wire_format_and_refused_token(caplog):
    caplog.set_level(logging.DEBUG)
    user, token = "mailer@example.test", "ya29.a0-access-token"
    with SmtpSink(oauth_tokens={user: token}) as sink:
        relay = relay_for(sink, auth="xoauth2", username=user, oauth_token=token)
        async with SmtpPool(relay) as pool:
            assert (await pool.send(mail(), SENDER, ["rcpt@example.test"])).outcome is Outcome.SENT
        [attempt] = sink.auth_attempts
        assert attempt.mechanism == "XOAUTH2" and attempt.success
        assert attempt.secret == b"user=mailer@example.test\x01auth=Bearer ya29.a0-access-token\x01\x01"

        stale = relay_for(sink, auth="xoauth2", username=user, oauth_token="ya29.expired-token")
        result = await send_once(stale, mail(), SENDER, ["rcpt@example.test"])
        assert result.outcome is Outcome.PERMANENT and result.code == 535
        assert "refused AUTH XOAUTH2" in result.detail
        for text in (result.detail, repr(result), repr(stale), caplog.text):
            assert "expired-token" not in text
        assert len(sink.messages) == 1


# --- refusals while opening a session (scripted server) ---------------------------------------


async def scripted_server(answers: dict[bytes, bytes], greeting: bytes = b"220 scripted ESMTP\r\n"):
    """A minimal SMTP server answering each command verb from ``answers`` (default: 250)."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        while not greeting.startswith(b"5") and (line := await reader.readline()):
            verb = line.split(b" ", 1)[0].strip().upper()
            writer.write(answers.get(verb, b"250 OK\r\n"))
            if verb == b"QUIT":
                break
        writer.close()

    return await asyncio.start_server(session, "127.0.0.1", 0)


@pytest.mark.parametrize(
    ("greeting", "answers", "outcome", "code", "enhanced"),
    [
        (b"554 5.7.1 Client host blocked\r\n", {}, Outcome.RETRYABLE, 554, "5.7.1"),
        (b"421 4.3.2 Too busy\r\n", {}, Outcome.RETRYABLE, 421, "4.3.2"),
        (None, {b"EHLO": b"550 5.7.1 Go away\r\n"}, Outcome.RETRYABLE, 550, "5.7.1"),
        (None, {b"AUTH": b"454 4.7.0 Temporary authentication failure\r\n"}, Outcome.RETRYABLE, 454, "4.7.0"),
        (None, {b"AUTH": b"535 5.7.8 Bad credentials\r\n"}, Outcome.PERMANENT, 535, "5.7.8"),
    ],
)
async def test_session_refusals(greeting, answers, outcome, code, enhanced):
    answers = {b"EHLO": b"250-scripted\r\n250 AUTH PLAIN LOGIN\r\n", **answers}
    server = await scripted_server(answers, greeting or b"220 scripted ESMTP\r\n")
    port = server.sockets[0].getsockname()[1]
    relay = RelayConfig(host="127.0.0.1", port=port, username="mailer", password="s3cret", timeout_s=5)
    async with server:
        result = await send_once(relay, mail(), SENDER, ["rcpt@example.test"])
    assert (result.outcome, result.code, result.enhanced_code) == (outcome, code, enhanced)
    assert not result.handed_over and "s3cret" not in result.detail
