"""Acceptance through real Dovecot + Apache Kafka: a customer's reply to their own mail joins its
ticket (in the same fetched batch as the original, and in a later one), a stranger who copied
the Message-ID gets a ticket of their own."""

from __future__ import annotations

import json

import pytest

from services.mail_scanner.app import create_app
from tests.integration.harness import AUTH, consume, eventually, running, service_settings
from tests.mail_scanner.engine.helpers import FAST, account_body, append, mail, make_folder, ticket, tickets

pytestmark = pytest.mark.timeout(180)

CUSTOMER = "customer@example.org"
STRANGER = "stranger@evil.example"


async def test_replies_to_own_mail_thread_and_copied_ids_do_not(kafka_broker, dovecot, unique, tmp_path):
    settings = service_settings(kafka_broker, unique, tmp_path, **FAST)
    folder = f"threads-{unique.id}"
    make_folder(dovecot, folder)
    original = f"<orig-{unique.id}@example.org>"
    reply = f"<reply-{unique.id}@example.org>"
    async with running(create_app, settings) as client:
        response = await client.post("/v1/accounts", json=account_body(dovecot, folder), headers=AUTH)
        assert response.status_code == 201, response.text
        account_id = response.json()["id"]
        # all in the folder before the account is active: one fetched batch
        append(
            dovecot,
            folder,
            mail(CUSTOMER, "Invoice wrong", "original text\n", cc="boss@example.org", message_id=original),
            mail(CUSTOMER, "Re: Invoice wrong", "same batch reply\n", in_reply_to=original, message_id=reply),
            mail(STRANGER, "Re: Invoice wrong", "injected text\n", in_reply_to=original),
        )
        response = await client.patch(f"/v1/accounts/{account_id}", json={"active": True}, headers=AUTH)
        assert response.status_code == 200, response.text
        [foreign] = await eventually(lambda: tickets(client, requester=STRANGER), timeout=60)
        [own] = await tickets(client, requester=CUSTOMER)
        detail = await ticket(client, own["number"])
        assert [c["text"].strip() for c in detail["comments"]] == ["original text", "same batch reply"]
        assert own["number"] in (foreign["note"] or "")
        assert [c["text"].strip() for c in (await ticket(client, foreign["number"]))["comments"]] == [
            "injected text"
        ]
        assert all("message_key" not in c for c in detail["comments"])

        # later, with the scanner idle: a ping on the customer's own reply, and the CC'd boss
        append(
            dovecot,
            folder,
            mail(
                CUSTOMER, "Fwd: Invoice wrong", "any news?\n", headers={"References": f"{original} {reply}"}
            ),
            mail("boss@example.org", "Re: Invoice wrong", "boss here\n", in_reply_to=original),
            mail("last@example.org", "Marker", "marker\n"),
        )
        await eventually(lambda: tickets(client, requester="last@example.org"), timeout=60)
        detail = await ticket(client, own["number"])
        assert [c["text"].strip() for c in detail["comments"]] == [
            "original text",
            "same batch reply",
            "any news?",
            "boss here",
        ]
        assert len(await tickets(client)) == 3

        def complete(records: list) -> bool:
            return len({json.loads(r.value)["message_id"] for r in records}) >= 6

        topic = settings.topic("helpdesk.ticket-events")
        records = await consume(kafka_broker.bootstrap, topic, 6, timeout=60, done=complete)
        events = {json.loads(r.value)["message_id"]: json.loads(r.value) for r in records}
        kinds = sorted((e["kind"], e["ticket_number"]) for e in events.values())
        assert kinds == sorted(
            [
                ("ticket.created", own["number"]),
                ("ticket.comment_added", own["number"]),
                ("ticket.created", foreign["number"]),
                ("ticket.comment_added", own["number"]),
                ("ticket.comment_added", own["number"]),
                ("ticket.created", (await tickets(client, requester="last@example.org"))[0]["number"]),
            ]
        )
