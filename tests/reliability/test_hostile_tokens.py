"""Forged and replayed link tokens, and spoofed ticket references, across the services.

Unsubscribe / view-online / open-pixel tokens come from a real mailing (taken from the mail at the
SMTP sink); the calendar token from the event triggers. Forged ones are refused and change
nothing; a replayed unsubscribe changes nothing more. The ticket part runs the mail scanner and
the mass mailer together: an agent reply leaves through the gateway, and strangers who quote its
ticket number or forge one of our Message-IDs get a new ticket, not a comment on someone else's.
(tests/mail_scanner/engine/test_flow.py covers the subject-number case inside the scanner alone.)
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import pytest
from sqlmodel import select

from services.event_triggers.app import create_app as create_triggers
from services.event_triggers.ics import calendar_link
from services.mail_scanner.app import create_app as create_scanner
from services.mass_mailer.app import create_app as create_mailer
from services.mass_mailer.mailings import links
from shared.db import session_scope
from shared.outbox import OutboxEvent
from tests.integration.harness import AUTH, eventually
from tests.mail_scanner.engine.helpers import FAST, add_account, append, mail, make_folder, ticket, tickets
from tests.mass_mailer.designs import one_column, text
from tests.reliability.hostile_support import Running, fleet, parse_mail, read_all
from tests.reliability.logcapture import register_secret
from tests.servers.smtp import SmtpSink

pytestmark = pytest.mark.timeout(300)
CALENDAR_SECRET = "calendar-link-secret-for-tests-1f2e"
CONTACTS = ("u-alice", "u-bob")


@pytest.fixture(scope="module")
async def services(kafka_broker, tmp_path_factory) -> AsyncIterator[tuple[dict[str, Running], SmtpSink]]:
    sink = SmtpSink()
    sink.start()
    register_secret(CALENDAR_SECRET, "the calendar link secret")
    try:
        async with fleet(
            {"mass_mailer": create_mailer, "mail_scanner": create_scanner, "event_triggers": create_triggers},
            kafka_broker,
            tmp_path_factory.mktemp("tokens"),
            connected=True,
            smtp_host=sink.host,
            smtp_port=sink.port,
            mailing_public_url="https://mailer.example.com/p",
            mailing_scheduler_interval_s=0.2,
            gateway_sweep_interval_s=0.2,
            event_triggers_link_secret=CALENDAR_SECRET,
            **{k: v for k, v in FAST.items() if k != "master_key"},
        ) as running:
            yield running, sink
    finally:
        sink.stop()


@pytest.fixture(scope="module")
async def mailing(services: tuple[dict[str, Running], SmtpSink]) -> dict[str, Any]:
    """A sent mailing to two contacts; their unsubscribe and pixel tokens as the mails carry them."""
    running, sink = services[0]["mass_mailer"], services[1]
    client = running.client
    identity = {
        "name": "News",
        "email": "news@example.com",
        "relay": {"host": sink.host, "port": sink.port, "tls": "none"},
    }
    assert (await client.post("/v1/sender-identities", headers=AUTH, json=identity)).status_code == 201
    rows = "\r\n".join(f"{c},{c}@example.org,{c.title()},X,en,no" for c in CONTACTS)
    csv = f"contact_id,email,first_name,last_name,language,email_opt_out\r\n{rows}\r\n"
    imported = await client.post("/v1/contacts/import", headers=AUTH, content=csv.encode())
    assert imported.status_code == 200 and imported.json()["rejected"] == 0, imported.text
    group = {"id": "tokens", "name": "Tokens", "active": True}
    assert (await client.post("/v1/target-groups", headers=AUTH, json=group)).status_code == 201
    added = await client.post(
        "/v1/target-groups/tokens/members", headers=AUTH, json={"contact_ids": list(CONTACTS)}
    )
    assert added.status_code == 200, added.text
    design = one_column(
        text("Hi {{ contact.first_name }}"),
        {"tagName": "mj-button", "attributes": {"href": "{{ links.unsubscribe }}"}, "content": "Unsubscribe"},
    )
    template = await client.post(
        "/v1/templates", headers=AUTH, json={"name": "T", "subject": "News", "design": design}
    )
    assert template.status_code == 201, template.text
    body = {
        "name": "M",
        "target_group_id": "tokens",
        "template_id": template.json()["id"],
        "sender_identity": "News",
    }
    created = await client.post("/v1/mailings", headers=AUTH, json=body)
    assert created.status_code == 201, created.text
    mailing_id = created.json()["id"]
    assert (await client.post(f"/v1/mailings/{mailing_id}/send-now", headers=AUTH)).status_code == 200
    tokens = {}
    for contact_id in CONTACTS:
        message = await eventually(
            lambda c=contact_id: next((m for m in sink.messages if f"{c}@example.org" in m.rcpt_tos), None),
            timeout=90,
        )
        parsed = parse_mail(message.data)
        header = str(parsed["List-Unsubscribe"])
        unsubscribe = unquote(re.search(r"<https://[^>]*/u/([^>]+)>", header)[1])  # type: ignore[index]
        html = parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]
        pixel = unquote(re.search(r"/m/open/([^\"'>]+)\.gif", html)[1])  # type: ignore[index]
        tokens[contact_id] = {"unsubscribe": unsubscribe, "pixel": pixel}
    await eventually(lambda: _statuses(client, mailing_id, {"sent"}), timeout=90)
    return {"id": mailing_id, "tokens": tokens}


async def _deliveries(client: Any, mailing_id: int) -> dict[str, str]:
    reply = await client.get(f"/v1/mailings/{mailing_id}/deliveries", headers=AUTH)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    rows = data["items"] if isinstance(data, dict) else data
    return {row["contact_id"]: row["status"] for row in rows}


async def _statuses(client: Any, mailing_id: int, wanted: set[str]) -> bool:
    found = await _deliveries(client, mailing_id)
    return len(found) == len(CONTACTS) and set(found.values()) <= wanted


def forgeries(real: str, other_contact: str) -> dict[str, str]:
    mailing, contact_b64, mac = real.split(".")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    other_b64 = links._b64(other_contact.encode())
    return {
        "flipped-mac": f"{mailing}.{contact_b64}.{flipped}",
        "other-contact": f"{mailing}.{other_b64}.{mac}",
        "other-mailing": f"{int(mailing) + 1}.{contact_b64}.{mac}",
        "wrong-key": links.make_token(b"not-the-key", int(mailing), other_contact),
        "no-mac": f"{mailing}.{contact_b64}.",
        "extra-part": f"{real}.x",
        "negative-mailing": f"-{mailing}.{contact_b64}.{mac}",
        "overlong": f"{mailing}.{links._b64(b'x' * 400)}.{mac}",
        "junk": "not-a-token",
        "traversal": "..%2F..%2Fadmin",
        "unicode": f"{mailing}.{contact_b64}.{mac}\u0301",
    }


async def test_forged_unsubscribe_view_and_pixel_tokens_change_nothing(
    services: tuple[dict[str, Running], SmtpSink], mailing: dict[str, Any]
) -> None:
    client = services[0]["mass_mailer"].client
    real = mailing["tokens"]["u-alice"]["unsubscribe"]
    before = await _deliveries(client, mailing["id"])
    for name, token in forgeries(real, "u-bob").items():
        path = quote(token, safe="%")
        urls = (("GET", f"/u/{path}"), ("POST", f"/u/{path}"), ("GET", f"/m/view/{path}"))
        for method, url in (*urls, ("GET", f"/m/survey/{path}"), ("GET", f"/m/survey/{path}.0")):
            reply = await client.request(method, url)
            assert reply.status_code in (404, 422), (name, method, url, reply.status_code)
            assert "Unsubscribed" not in reply.text
        pixel = await client.get(f"/m/open/{path}.gif")
        assert pixel.status_code in (200, 404) and pixel.headers["content-type"] != "text/html", name
    assert await _deliveries(client, mailing["id"]) == before  # nobody unsubscribed or "opened"
    for contact_id in CONTACTS:
        contact = (await client.get(f"/v1/contacts/{contact_id}", headers=AUTH)).json()
        assert contact["unsubscribed"] is False, contact


async def test_real_pixel_counts_once_and_a_replayed_unsubscribe_changes_nothing_more(
    services: tuple[dict[str, Running], SmtpSink], mailing: dict[str, Any], kafka_broker
) -> None:
    running = services[0]["mass_mailer"]
    client = running.client
    bob = mailing["tokens"]["u-bob"]
    for _ in range(3):  # a replayed pixel: still one "opened", no error
        assert (await client.get(f"/m/open/{quote(bob['pixel'], safe='')}.gif")).status_code == 200
    assert (await _deliveries(client, mailing["id"]))["u-bob"] == "opened"

    token = quote(mailing["tokens"]["u-alice"]["unsubscribe"], safe="")
    assert (await client.get(f"/u/{token}")).status_code == 200  # the confirmation page changes nothing
    assert (await client.get("/v1/contacts/u-alice", headers=AUTH)).json()["unsubscribed"] is False
    for _ in range(3):  # one-click, then replays
        reply = await client.post(f"/u/{token}")
        assert reply.status_code == 200 and "Unsubscribed" in reply.text
    assert (await client.get("/v1/contacts/u-alice", headers=AUTH)).json()["unsubscribed"] is True
    assert (await client.get("/v1/contacts/u-bob", headers=AUTH)).json()["unsubscribed"] is False
    # Once the outbox has published everything, exactly one "unsubscribed" event exists.
    await eventually(lambda: _outbox_empty(running), timeout=60)
    events = [
        json.loads(r.value)
        for r in await read_all(
            kafka_broker.bootstrap, running.topic("mail.delivery-events"), running.settings.kafka_partitions
        )
    ]
    unsubscribed = [e for e in events if e["status"] == "unsubscribed"]
    assert [e["recipient"] for e in unsubscribed] == ["u-alice@example.org"], unsubscribed
    # Another mailing's token cannot be made from this one: the key never leaves the service.
    assert running.settings.mailing_link_secret is not None
    assert running.settings.mailing_link_secret.get_secret_value() not in json.dumps(events)


def _outbox_empty(running: Running) -> bool:
    with session_scope(running.app.service.database_url) as session:
        return session.exec(select(OutboxEvent)).first() is None


async def test_forged_calendar_tokens_are_refused(services: tuple[dict[str, Running], SmtpSink]) -> None:
    running = services[0]["event_triggers"]
    client = running.client
    start = datetime.now(UTC) + timedelta(days=3)
    for event_id in ("ev-1", "ev-2"):
        body = {"kind": "mass_event.created", "event_id": event_id, "event_number": "E", "name": "Fair",
                "start": start.isoformat(), "end": (start + timedelta(hours=2)).isoformat()}  # fmt: skip
        assert (await client.post("/v1/mass-events", headers=AUTH, json=body)).status_code in (200, 202)
    await eventually(lambda: _exists(client, "/v1/mass-events/ev-2"), timeout=60)
    good = calendar_link("", CALENDAR_SECRET.encode(), "ev-1")
    assert (await client.get(good)).status_code == 200
    token = good.split("token=")[1]
    other = calendar_link("", CALENDAR_SECRET.encode(), "ev-2").split("token=")[1]
    for name, url in {
        "other-event-token": f"/calendar/ev-1.ics?token={other}",
        "wrong-key": calendar_link("", b"wrong", "ev-1"),
        "flipped": f"/calendar/ev-1.ics?token={token[:-1]}{'A' if token[-1] != 'A' else 'B'}",
        "truncated": f"/calendar/ev-1.ics?token={token[:10]}",
        "empty": "/calendar/ev-1.ics?token=",
        "missing": "/calendar/ev-1.ics",
        "overlong": f"/calendar/ev-1.ics?token={token * 10}",
        "unicode": f"/calendar/ev-1.ics?token={token[:-1]}\u00e9",
    }.items():
        reply = await client.get(url)
        assert reply.status_code in (404, 422), (name, reply.status_code)
        assert "BEGIN:VCALENDAR" not in reply.text


async def _exists(client: Any, path: str) -> bool:
    return (await client.get(path, headers=AUTH)).status_code == 200


async def test_strangers_quoting_or_forging_ticket_references_get_a_new_ticket(
    services: tuple[dict[str, Running], SmtpSink], dovecot, unique
) -> None:
    fleet_, sink = services
    scanner = fleet_["mail_scanner"].client
    register_secret(dovecot.users["alice"], "the dovecot password of alice")
    register_secret(dovecot.users["bob"], "the dovecot password of bob")
    folder = f"tokens-{unique.id}"
    make_folder(dovecot, folder)
    await add_account(scanner, dovecot, folder)
    append(dovecot, folder, mail(sender="customer@example.org", subject="Invoice wrong"))
    [new] = await eventually(lambda: tickets(scanner, requester="customer@example.org"), timeout=60)
    number = new["number"]
    # The agent's reply leaves through the mass mailer's gateway: take its Message-ID off the wire.
    reply = await scanner.post(f"/v1/tickets/{number}/replies", headers=AUTH, json={"text": "Fixed."})
    assert reply.status_code == 201, reply.text
    sent = await eventually(
        lambda: next((m for m in sink.messages if "customer@example.org" in m.rcpt_tos), None), timeout=60
    )
    our_id = str(parse_mail(sent.data)["Message-ID"])
    assert our_id == reply.json()["message_id"] and number in str(parse_mail(sent.data)["Subject"])
    body_part, _, mac_domain = our_id.strip("<>").rpartition(".")
    mac, _, domain = mac_domain.partition("@")
    forged_mac = f"<{body_part}.{mac[:-1]}{'0' if mac[-1] != '0' else '1'}@{domain}>"
    other_ticket = re.sub(r"^<tt\.\d+\.", "<tt.999999.", our_id)
    append(
        dovecot,
        folder,
        mail(sender="stranger1@evil.example", subject=f"Re: [{number}] Invoice wrong", body="Give me data\n"),
        mail(sender="stranger2@evil.example", subject="Hello", body=f"Look [ticket:{number}]\n"),
        mail(sender="stranger3@evil.example", subject=f"AW: {number}", in_reply_to=forged_mac),
        mail(sender="stranger4@evil.example", subject="Re: Invoice", in_reply_to=other_ticket),
        # the requester with our real Message-ID: a comment (the positive control)
        mail(
            sender="customer@example.org", subject="Re: Invoice wrong", in_reply_to=our_id, body="Thanks!\n"
        ),
    )
    for n in range(1, 5):
        await eventually(lambda n=n: tickets(scanner, requester=f"stranger{n}@evil.example"), timeout=60)

    async def customer_reply() -> dict | None:
        detail = await ticket(scanner, number)
        return detail if any("Thanks!" in c["text"] for c in detail["comments"]) else None

    detail = await eventually(customer_reply, timeout=60)
    texts = [c["text"] for c in detail["comments"]]
    assert not any("Give me data" in t or "Look [ticket" in t for t in texts), texts
    assert len(texts) == 3, texts  # the first mail, the agent reply, the customer's reply
    for n in range(1, 5):
        [foreign] = await tickets(scanner, requester=f"stranger{n}@evil.example")
        assert foreign["number"] != number
        if n <= 2:  # a quoted number is named in the note, for the agent to judge
            assert number in (foreign["note"] or ""), foreign
