"""The outbound gateway through Apache Kafka into an aiosmtpd sink."""

from __future__ import annotations

import asyncio
import json

import dkim
import pytest

from services.mass_mailer.app import create_app as create_mailer
from shared.secretbox import generate_master_key
from tests.integration.harness import AUTH, consume, eventually, running, service_settings
from tests.mass_mailer.designs import one_column, text
from tests.servers.smtp import replies

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def settings(kafka_broker, unique, smtp_sink, tmp_path):
    return service_settings(
        kafka_broker, unique, tmp_path,
        smtp_host=smtp_sink.host, smtp_port=smtp_sink.port,
        master_key=generate_master_key(),
        gateway_retry_base_s=0.3, gateway_retry_max_s=1.0, gateway_sweep_interval_s=0.2,
        default_sender="noreply@example.com", mail_domain="mail.example.com",
    )  # fmt: skip


async def events_for(settings, kafka_broker, count: int) -> list[dict]:
    records = await consume(kafka_broker.bootstrap, settings.topic("mail.delivery-events"), count, timeout=60)
    return [json.loads(r.value) for r in records]


async def send(client, **fields) -> None:
    body = {"to": ["rcpt@example.org"], "subject": "hello", "text": "body", **fields}
    reply = await client.post("/v1/transactional", headers=AUTH, json=body)
    assert reply.status_code == 202, reply.text


async def wait_accepted(sink, count: int) -> list:
    return await asyncio.to_thread(sink.wait_for, count, 60)


async def test_identity_mail_is_dual_signed_threaded_and_reported(settings, kafka_broker, smtp_sink):
    async with running(create_mailer, settings) as client:
        for selector, algorithm in (("rsa1", "rsa"), ("ed1", "ed25519")):
            reply = await client.post(
                "/v1/dkim-keys",
                headers=AUTH,
                json={"domain": "example.com", "selector": selector, "algorithm": algorithm},
            )
            assert reply.status_code == 201, reply.text
        identity = {
            "name": "Support", "email": "support@example.com", "display_name": "Support Team",
            "relay": {"host": smtp_sink.host, "port": smtp_sink.port, "tls": "none"},
            "dkim_domain": "example.com",
        }  # fmt: skip
        created = await client.post("/v1/sender-identities", headers=AUTH, json=identity)
        assert created.status_code == 201, created.text
        records = (
            await client.get(f"/v1/sender-identities/{created.json()['id']}/dns-records", headers=AUTH)
        ).json()
        await send(
            client,
            correlation_id="c-signed",
            sender_identity="Support",
            subject="Re: [TT1042] Drucker",
            in_reply_to="<orig@customer.example>",
            references=["<orig@customer.example>"],
        )
        message = (await wait_accepted(smtp_sink, 1))[0]
        events = await events_for(settings, kafka_broker, 1)

    txt = {f"{r['name']}.".encode(): r["value"].encode() for r in records}
    dns = lambda name, timeout=5: txt.get(name, b"")  # noqa: E731
    verifier = dkim.DKIM(message.data)
    assert verifier.verify(idx=0, dnsfunc=dns) and verifier.verify(idx=1, dnsfunc=dns)
    parsed = message.message
    assert str(parsed["From"]) == "Support Team <support@example.com>"
    assert str(parsed["In-Reply-To"]) == "<orig@customer.example>"
    assert str(parsed["Message-ID"]).endswith("@mail.example.com>")
    assert message.mail_from == "support@example.com"
    assert [(e["correlation_id"], e["status"], e["message_id_header"]) for e in events] == [
        ("c-signed", "sent", str(parsed["Message-ID"]))
    ]


async def test_suppressed_address_gets_no_smtp_attempt(settings, kafka_broker, smtp_sink):
    async with running(create_mailer, settings) as client:
        reply = await client.post(
            "/v1/suppressions", headers=AUTH, json={"email": "Gone@Example.org", "reason": "bounced"}
        )
        assert reply.status_code == 201
        await send(client, correlation_id="c-suppressed", to=["gone@example.org"])
        events = await events_for(settings, kafka_broker, 1)
        status = (await client.get("/v1/transactional/c-suppressed", headers=AUTH)).json()
    assert events[0]["status"] == "failed" and events[0]["reason"] == "suppressed: bounced"
    assert status["status"] == "failed"
    # no attempt was made: no attempt counted, no Message-ID chosen (rows are born "sending")
    assert (status["attempts"], status["message_id_header"]) == (0, None)
    assert (events[0]["attempt"], events[0]["message_id_header"]) == (1, None)
    assert smtp_sink.messages == []


async def test_451_is_retried_later_and_then_sent(settings, kafka_broker, smtp_sink):
    smtp_sink.hook = replies("451 4.3.0 try again later")
    async with running(create_mailer, settings) as client:
        await send(client, correlation_id="c-451")
        await wait_accepted(smtp_sink, 1)

        async def final() -> dict | None:
            row = (await client.get("/v1/transactional/c-451", headers=AUTH)).json()
            return row if row.get("status") == "sent" else None

        row = await eventually(final)
        events = await events_for(settings, kafka_broker, 2)
    assert [m.reply[:3] for m in smtp_sink.messages] == ["451", "250"]
    assert row["attempts"] == 2
    assert [(e["status"], e["smtp_code"], e["enhanced_code"]) for e in events] == [
        ("deferred", 451, "4.3.0"),
        ("sent", 250, events[1]["enhanced_code"]),
    ]
    # Same Message-ID on the retry, so receivers can drop a duplicate.
    assert smtp_sink.messages[0].message["Message-ID"] == smtp_sink.messages[1].message["Message-ID"]


async def test_550_fails_permanently_without_retry(settings, kafka_broker, smtp_sink):
    smtp_sink.hook = replies("550 5.1.1 no such user")
    async with running(create_mailer, settings) as client:
        await send(client, correlation_id="c-550")
        events = await events_for(settings, kafka_broker, 1)
        await asyncio.sleep(1.0)  # a retry would have happened by now
    assert (events[0]["status"], events[0]["smtp_code"], events[0]["enhanced_code"]) == (
        "failed",
        550,
        "5.1.1",
    )
    assert len(smtp_sink.messages) == 1


async def test_retries_stop_at_the_deadline(kafka_broker, unique, smtp_sink, tmp_path):
    settings = service_settings(
        kafka_broker, unique, tmp_path, smtp_host=smtp_sink.host, smtp_port=smtp_sink.port,
        gateway_retry_base_s=0.2, gateway_retry_max_s=0.4, gateway_retry_deadline_s=1.5,
        gateway_sweep_interval_s=0.1,
    )  # fmt: skip
    smtp_sink.hook = lambda _message: "421 4.7.0 slow down"
    async with running(create_mailer, settings) as client:
        await send(client, correlation_id="c-expire")

        async def final() -> dict | None:
            row = (await client.get("/v1/transactional/c-expire", headers=AUTH)).json()
            return row if row.get("status") == "failed" else None

        row = await eventually(final)
    assert row["attempts"] >= 2 and "deadline" in row["last_error"]


async def test_the_same_correlation_id_is_sent_once(settings, kafka_broker, smtp_sink):
    async with running(create_mailer, settings) as client:
        for _ in range(3):
            await send(client, correlation_id="c-once", subject="only once")
        await wait_accepted(smtp_sink, 1)
        await asyncio.sleep(1.5)
    assert len(smtp_sink.messages) == 1


async def test_a_recipient_refused_with_4xx_is_retried_alone(settings, kafka_broker, smtp_sink):
    refusals = ["450 4.2.1 mailbox busy"]
    smtp_sink.rcpt_hook = lambda rcpt: refusals.pop() if rcpt == "busy@example.org" and refusals else None
    async with running(create_mailer, settings) as client:
        await send(client, correlation_id="c-partial", to=["ok@example.org", "busy@example.org"])

        async def final() -> dict | None:
            row = (await client.get("/v1/transactional/c-partial", headers=AUTH)).json()
            return row if row.get("status") == "sent" and row.get("attempts") == 2 else None

        await eventually(final)
        events = await events_for(settings, kafka_broker, 3)
    assert [m.rcpt_tos for m in smtp_sink.accepted] == [("ok@example.org",), ("busy@example.org",)]
    assert sorted((e["recipient"], e["status"]) for e in events) == [
        ("busy@example.org", "deferred"),
        ("busy@example.org", "sent"),
        ("ok@example.org", "sent"),
    ]


async def test_a_given_message_id_header_is_used(settings, kafka_broker, smtp_sink):
    async with running(create_mailer, settings) as client:
        await send(client, correlation_id="c-msgid", message_id_header="<ticket.1042.abc@help.example.com>")
        message = (await wait_accepted(smtp_sink, 1))[0]
    assert str(message.message["Message-ID"]) == "<ticket.1042.abc@help.example.com>"


async def test_template_mail_is_rendered_from_merge_data(settings, kafka_broker, smtp_sink):
    design = one_column(
        text("Hello {{ contact.first_name | default('guest') }}, see you at {{ event.name }}."),
        {
            "tagName": "mj-button",
            "attributes": {"href": "{{ links.calendar }}"},
            "content": "Add to calendar",
        },
    )
    async with running(create_mailer, settings) as client:
        created = await client.post(
            "/v1/templates",
            headers=AUTH,
            json={"name": "confirmation", "subject": "Welcome {{ contact.first_name }}", "design": design},
        )
        assert created.status_code == 201, created.text
        template_id = created.json()["id"]
        await send(
            client, correlation_id="c-template", subject="", text=None, template_id=str(template_id),
            merge_data={"contact": {"first_name": "Zoë <b>"}, "event": {"name": "PyCon"},
                        "links": {"calendar": "https://events.example.com/cal/1.ics"}},
        )  # fmt: skip
        await send(client, correlation_id="c-no-template", text=None, template_id="999999")
        message = (await wait_accepted(smtp_sink, 1))[0]
        events = await events_for(settings, kafka_broker, 2)
    parsed = message.message
    assert str(parsed["Subject"]) == "Welcome Zoë <b>"
    html = parsed.get_body(("html",)).get_content()
    assert "Hello Zoë &lt;b&gt;, see you at PyCon." in html and "https://events.example.com/cal/1.ics" in html
    assert "Hello Zoë <b>, see you at PyCon." in parsed.get_body(("plain",)).get_content()
    by_id = {e["correlation_id"]: e for e in events}
    assert by_id["c-template"]["status"] == "sent"
    assert (
        by_id["c-no-template"]["status"] == "failed" and "does not exist" in by_id["c-no-template"]["reason"]
    )
