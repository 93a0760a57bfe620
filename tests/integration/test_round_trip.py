"""Acceptance: messages cross services through a real broker; failures land in the DLQ."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from services.event_triggers.app import create_app as create_triggers
from services.mail_scanner.app import create_app as create_scanner
from services.mass_mailer.app import create_app as create_mailer
from shared.broker import make_broker
from shared.consumer import subscribe
from shared.contracts import ContactMessage, ContactOptedOut, ContactUpserted
from shared.kafka_admin import ensure_topics
from tests.integration.harness import AUTH, consume, eventually, produce, running, service_settings


async def test_event_triggers_mail_goes_through_the_gateway_and_reports_back(
    kafka_broker, unique, smtp_sink, tmp_path
):
    settings = service_settings(
        kafka_broker, unique, tmp_path, smtp_host=smtp_sink.host, smtp_port=smtp_sink.port
    )
    async with running(create_mailer, settings), running(create_triggers, settings) as triggers:
        reply = await triggers.post(
            "/v1/test-mail",
            headers=AUTH,
            json={
                "correlation_id": "reg-42",
                "to": ["guest@example.org"],
                "subject": "Your ticket",
                "text": "See you",
            },
        )
        assert reply.status_code == 202, reply.text
        correlation_id = reply.json()["correlation_id"]

        async def delivered() -> list:
            rows = (
                await triggers.get("/v1/deliveries", params={"correlation_id": correlation_id}, headers=AUTH)
            ).json()
            return [r for r in rows if r["status"] == "sent"]

        rows = await eventually(delivered, timeout=60)
        assert rows[0]["recipient"] == "guest@example.org"
    received = smtp_sink.wait_for(1)
    assert received[0].message["Subject"] == "Your ticket"
    assert len(smtp_sink.accepted) == 1


async def test_contacts_fan_out_to_mailer_and_scanner(kafka_broker, unique, tmp_path):
    settings = service_settings(kafka_broker, unique, tmp_path)
    async with running(create_mailer, settings) as mailer, running(create_scanner, settings) as scanner:
        await produce(
            kafka_broker.bootstrap,
            settings.topic("crm.contacts"),
            [
                {
                    "kind": "contact.upserted",
                    "contact_id": "C7",
                    "email": "Ada@Example.org",
                    "first_name": "Ada",
                }
            ],
            key=b"C7",
        )

        async def in_mailer() -> httpx.Response | None:
            reply = await mailer.get("/v1/contacts/C7", headers=AUTH)
            return reply if reply.status_code == 200 else None

        assert (await eventually(in_mailer)).json()["email"] == "ada@example.org"

        async def in_scanner() -> httpx.Response | None:
            reply = await scanner.get("/v1/requesters", params={"email": "ada@example.org"}, headers=AUTH)
            return reply if reply.status_code == 200 else None

        assert (await eventually(in_scanner)).json()["contact_id"] == "C7"


async def test_poison_messages_go_to_the_dlq_and_the_partition_keeps_moving(kafka_broker, unique, tmp_path):
    settings = service_settings(kafka_broker, unique, tmp_path)
    topic = settings.topic("crm.contacts")
    async with running(create_mailer, settings) as mailer:
        # Same key, so all four land on one partition, in this order.
        await produce(
            kafka_broker.bootstrap,
            topic,
            [
                b"{not json",
                {"kind": "contact.upserted", "contact_id": "C1", "schema_version": 99},
                {"kind": "contact.upserted", "contact_id": "C1", "first_name": "x" * 5000},
                {"kind": "contact.upserted", "contact_id": "C1", "email": "ok@example.org"},
            ],
            key=b"C1",
        )

        async def stored() -> bool:
            return (await mailer.get("/v1/contacts/C1", headers=AUTH)).status_code == 200

        await eventually(stored)
    dead = await consume(kafka_broker.bootstrap, settings.topic("crm.contacts.dlq"), 3)
    assert len(dead) == 3
    reasons = [dict(r.headers)["x-dlq-reason"].decode() for r in dead]
    assert "invalid message" in reasons[0]
    assert "schema_version" in reasons[1]
    assert "first_name" in reasons[2]
    assert dead[0].value == b"{not json"
    assert all(dict(r.headers)["x-dlq-topic"].decode() == "crm.contacts" for r in dead)


@pytest.mark.parametrize("batch_size", [1, 10])
async def test_a_handler_that_raises_dead_letters_after_retries(kafka_broker, unique, tmp_path, batch_size):
    """The shared consumer: a handler error is retried, then dead-lettered; the next message is handled."""
    settings = service_settings(kafka_broker, unique, tmp_path)
    broker = make_broker(settings)
    handled: list[str] = []

    async def on_contact(message: ContactUpserted | ContactOptedOut) -> None:
        if message.contact_id == "poison":
            raise RuntimeError("cannot handle poison")
        handled.append(message.contact_id)

    subscribe(
        broker,
        settings,
        "crm.contacts",
        ContactMessage,
        on_contact,
        group=unique.id,
        batch_size=batch_size,
        concurrency=4,
    )
    await ensure_topics(settings)
    async with broker:
        await broker.start()
        await produce(
            kafka_broker.bootstrap,
            settings.topic("crm.contacts"),
            [
                {"kind": "contact.upserted", "contact_id": "poison"},
                {"kind": "contact.upserted", "contact_id": "next"},
            ],
            key=b"same-partition",
        )
        await eventually(lambda: handled == ["next"], timeout=60)
    dead = await consume(kafka_broker.bootstrap, settings.topic("crm.contacts.dlq"), 1)
    headers = dict(dead[0].headers)
    assert headers["x-dlq-exception"] == b"RuntimeError"
    assert headers["x-dlq-attempts"] == str(settings.consumer_max_attempts).encode()
    assert b"cannot handle poison" in headers["x-dlq-reason"]
    assert json.loads(dead[0].value)["contact_id"] == "poison"


async def test_invalid_attachment_is_dead_lettered_and_the_next_mail_is_sent(
    kafka_broker, unique, smtp_sink, tmp_path
):
    settings = service_settings(
        kafka_broker, unique, tmp_path, smtp_host=smtp_sink.host, smtp_port=smtp_sink.port
    )
    topic = settings.topic("mail.outbound.transactional")
    bad = {
        "correlation_id": "bad-1",
        "to": ["a@example.org"],
        "text": "x",
        "attachments": [{"filename": "a.txt", "content_b64": "%%%not base64%%%"}],
    }
    good = {"correlation_id": "good-1", "to": ["b@example.org"], "subject": "after poison", "text": "x"}
    async with running(create_mailer, settings):
        await produce(kafka_broker.bootstrap, topic, [bad, good], key=b"same-partition")
        await asyncio.to_thread(smtp_sink.wait_for, 1, 60)
    dead = await consume(kafka_broker.bootstrap, settings.topic("mail.outbound.transactional.dlq"), 1)
    assert b"not valid base64" in dict(dead[0].headers)["x-dlq-reason"]
    assert [m.message["Subject"] for m in smtp_sink.accepted] == ["after poison"]


async def test_gdpr_erase_on_crm_contacts_reaches_mailer_and_scanner(kafka_broker, unique, tmp_path):
    settings = service_settings(kafka_broker, unique, tmp_path)
    async with running(create_mailer, settings) as mailer, running(create_scanner, settings) as scanner:
        topic = settings.topic("crm.contacts")
        upsert = {
            "kind": "contact.upserted",
            "contact_id": "C9",
            "email": "erase.me@example.org",
            "first_name": "Eve",
        }
        await produce(kafka_broker.bootstrap, topic, [upsert], key=b"C9")

        async def known() -> bool:
            in_mailer = (await mailer.get("/v1/contacts/C9", headers=AUTH)).status_code
            in_scanner = (
                await scanner.get("/v1/requesters", params={"email": "erase.me@example.org"}, headers=AUTH)
            ).status_code
            return in_mailer == in_scanner == 200

        await eventually(known)
        await produce(
            kafka_broker.bootstrap, topic, [{"kind": "contact.erased", "contact_id": "C9"}], key=b"C9"
        )

        async def gone() -> bool:
            in_mailer = (await mailer.get("/v1/contacts/C9", headers=AUTH)).status_code
            in_scanner = (
                await scanner.get("/v1/requesters", params={"email": "erase.me@example.org"}, headers=AUTH)
            ).status_code
            return in_mailer == 404 and in_scanner == 404

        await eventually(gone)
    assert await consume(kafka_broker.bootstrap, settings.topic("crm.contacts.dlq"), 1, timeout=2) == []
