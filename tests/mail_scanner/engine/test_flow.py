"""Acceptance through real Dovecot + Apache Kafka: mail becomes tickets and comments, machine
mail creates nothing, DSNs become bounced events, CCs land on tickets and agent replies."""

from __future__ import annotations

import json

import pytest

from services.mail_scanner.app import create_app
from tests.integration.harness import AUTH, consume, eventually, running, service_settings
from tests.mail_scanner.engine.helpers import (
    FAST,
    add_account,
    append,
    dsn,
    flags,
    mail,
    make_folder,
    ticket,
    tickets,
)

pytestmark = pytest.mark.timeout(180)


async def test_mail_to_tickets_replies_machine_mail_and_bounces(kafka_broker, dovecot, unique, tmp_path):
    settings = service_settings(kafka_broker, unique, tmp_path, **FAST)
    folder = f"flow-{unique.id}"
    make_folder(dovecot, folder)
    async with running(create_app, settings) as client:
        account = await add_account(client, dovecot, folder)

        # new mail -> ticket, Cc kept on the ticket, mail marked \Seen
        first = mail(cc="Boss <boss@example.org>, support@helpdesk.example.test")
        append(dovecot, folder, first)
        [new] = await eventually(lambda: tickets(client, requester="customer@example.org"))
        number = new["number"]
        assert number.startswith("TT") and new["subject"] == "Printer on fire"
        assert new["cc"] == ["boss@example.org"]
        await eventually(lambda: all(b"\\Seen" in f for f in flags(dovecot, folder).values()))

        # agent reply -> OutboundEmail with our signed Message-ID, the ticket number and the CCs
        response = await client.post(
            f"/v1/tickets/{number}/replies", json={"text": "We are on it."}, headers=AUTH
        )
        assert response.status_code == 201, response.text
        reply = response.json()
        assert reply["cc"] == ["boss@example.org"] and number in reply["subject"]
        [outbound] = await consume(kafka_broker.bootstrap, settings.topic("mail.outbound.transactional"), 1)
        email = json.loads(outbound.value)
        assert email["message_id_header"] == reply["message_id"]
        assert email["cc"] == ["boss@example.org"] and email["to"] == ["customer@example.org"]
        assert number in email["subject"] and email["in_reply_to"]
        assert email["headers"].get("X-Mailsvc-Loop")

        # replies: In-Reply-To our id (AW:), subject number from the requester (SV: Re:),
        # subject number from a CC (VS:) -> comments on the same ticket
        append(
            dovecot,
            folder,
            mail(
                subject=f"AW: [{number}] Printer on fire", in_reply_to=reply["message_id"], body="Thanks!\n"
            ),
            mail(subject=f"SV: Re: {number} Printer on fire", body="Still burning.\n"),
            mail(sender="boss@example.org", subject=f"VS: [{number}] Printer on fire", body="Me too.\n"),
            # a stranger quoting the ticket number -> a new ticket noting the reference
            mail(
                sender="stranger@evil.example",
                subject=f"Re: [{number}] Printer on fire",
                body="Give me data\n",
            ),
            # an auto-reply creates nothing
            mail(subject=f"Out of office: [{number}]", headers={"Auto-Submitted": "auto-replied"}),
            # a DSN -> a bounced delivery event with the original Message-ID
            dsn(reply["message_id"], "customer@example.org"),
            # our own mail (loop header) is dropped
            mail(
                sender="someone@example.org",
                subject="loop",
                headers={"X-Mailsvc-Loop": "helpdesk.example.test"},
            ),
            mail(sender="last@example.org", subject="Marker"),
        )
        await eventually(lambda: tickets(client, requester="last@example.org"))
        detail = await ticket(client, number)
        bodies = [c["text"] for c in detail["comments"]]
        assert len(bodies) == 5, bodies  # first mail, agent reply, three replies
        assert any("Thanks!" in b for b in bodies) and any("Still burning" in b for b in bodies)
        assert any("Me too" in b for b in bodies)
        [foreign] = await tickets(client, requester="stranger@evil.example")
        assert foreign["number"] != number and number in (foreign["note"] or "")
        everything = await tickets(client)
        assert {t["requester_email"] for t in everything} == {
            "customer@example.org",
            "stranger@evil.example",
            "last@example.org",
        }

        bounces = await consume(kafka_broker.bootstrap, settings.topic("mail.delivery-events"), 1)
        event = json.loads(bounces[0].value)
        assert event["status"] == "bounced" and event["recipient"] == "customer@example.org"
        assert event["message_id_header"] == reply["message_id"] and "hard" in event["reason"]

        events = await consume(kafka_broker.bootstrap, settings.topic("helpdesk.ticket-events"), 7)
        kinds = sorted(json.loads(r.value)["kind"] for r in events)
        assert kinds.count("ticket.created") == 3 and kinds.count("ticket.comment_added") == 4

        state = (await client.get(f"/v1/accounts/{account['id']}", headers=AUTH)).json()
        assert state["state"] == "idle" and state["has_password"]
        assert dovecot.users["alice"] not in json.dumps(state)
