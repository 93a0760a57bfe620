import smtplib
import time

import aiosmtplib
import pytest

from tests.servers.smtp import DROP, PostfixSmtpSink, SmtpSink, replies

RAW = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: sink test\r\n\r\nHello.\r\n"


async def send(sink: SmtpSink, recipients: list[str] | None = None, **kwargs) -> tuple:
    return await aiosmtplib.send(
        RAW,
        sender="a@example.test",
        recipients=recipients or ["b@example.test"],
        hostname=sink.host,
        port=sink.port,
        **kwargs,
    )


async def test_records_messages(smtp_sink):
    await send(smtp_sink, ["b@example.test", "c@example.test"])
    [msg] = smtp_sink.wait_for(1)
    assert msg.mail_from == "a@example.test"
    assert msg.rcpt_tos == ("b@example.test", "c@example.test")
    assert msg.data.replace(b"\r\n", b"\n") == RAW.replace(b"\r\n", b"\n")
    assert msg.message["Subject"] == "sink test"
    smtp_sink.clear()
    assert smtp_sink.messages == []


async def test_451_then_retry_succeeds(smtp_sink):
    smtp_sink.hook = replies("451 4.3.0 Try again later")
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await send(smtp_sink)
    assert err.value.code == 451
    await send(smtp_sink)
    assert [m.reply[:3] for m in smtp_sink.messages] == ["451", "250"]
    assert len(smtp_sink.accepted) == 1


async def test_550_recipient_and_dropped_connection(smtp_sink):
    smtp_sink.rcpt_hook = lambda rcpt: "550 5.1.1 No such user" if rcpt.startswith("x") else None
    rejected, _ = await send(smtp_sink, ["b@example.test", "x@example.test"])
    assert rejected["x@example.test"].code == 550
    assert smtp_sink.messages[-1].rcpt_tos == ("b@example.test",)

    smtp_sink.hook = lambda msg: DROP
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await send(smtp_sink)
    assert len(smtp_sink.accepted) == 1


async def test_auth():
    with SmtpSink(users={"mailer": "secret"}) as sink:
        with pytest.raises(aiosmtplib.SMTPException):
            await send(sink)
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await send(sink, username="mailer", password="wrong")
        await send(sink, username="mailer", password="secret")
        assert len(sink.accepted) == 1


def test_postfix_smtp_sink_counts():
    with PostfixSmtpSink() as sink:
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
            for _ in range(5):
                client.sendmail("a@example.test", ["b@example.test"], RAW)
        deadline = time.monotonic() + 5
        while sink.received() < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sink.received() == 5
