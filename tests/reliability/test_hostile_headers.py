"""Header injection through every field that reaches a header, end to end into an SMTP sink.

Transactional mail (API -> Kafka -> gateway -> SMTP): subjects, custom headers, attachment
names, template subjects with hostile merge data, sender identity display names. Bulk mail
(CSV import / crm.contacts -> mailing -> bulk sender -> SMTP): contact names and custom fields
used in subject merge tags. Each hostile message must arrive with exactly the header names of a
benign control message sent the same way (parsed with the stdlib parser), with only its own
envelope recipient, or be refused with a clear reason. Nothing may smuggle a Bcc or a body.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.mass_mailer.app import create_app as create_mailer
from tests.integration.harness import AUTH, eventually, produce
from tests.mass_mailer.designs import one_column, text
from tests.reliability.hostile_support import Running, header_names, hostile_settings, parse_mail, started
from tests.servers.smtp import SmtpMessage, SmtpSink

pytestmark = pytest.mark.timeout(300)

INJECTED = "victim@evil.test"
CRLF_BCC = f"Hi\r\nBcc: {INJECTED}"
PART_HEADERS = {
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-id",
    "mime-version",
}


@pytest.fixture(scope="module")
async def env(kafka_broker, tmp_path_factory) -> AsyncIterator[tuple[Running, SmtpSink]]:
    sink = SmtpSink()
    sink.start()
    settings, names = hostile_settings(
        kafka_broker,
        tmp_path_factory.mktemp("headers"),
        smtp_host=sink.host,
        smtp_port=sink.port,
        default_sender="noreply@example.com",
        mail_domain="mail.example.com",
        mailing_public_url="https://mailer.example.com/p",
        mailing_scheduler_interval_s=0.2,
        gateway_sweep_interval_s=0.2,
    )
    try:
        async with started(create_mailer, settings, names) as running:
            yield running, sink
    finally:
        sink.stop()


async def arrived(sink: SmtpSink, rcpt: str) -> SmtpMessage:
    async def find() -> SmtpMessage | None:
        mine = [m for m in sink.messages if rcpt in m.rcpt_tos]
        return mine[0] if mine else None

    return await eventually(find, timeout=60)


def assert_clean(message: SmtpMessage, control: SmtpMessage, rcpt: str) -> None:
    """Same header names as the control, own recipient only, ASCII header lines under 998."""
    parsed, expected = parse_mail(message.data), parse_mail(control.data)
    assert message.rcpt_tos == (rcpt,), message.rcpt_tos
    assert Counter(header_names(parsed)) == Counter(header_names(expected)), (
        header_names(parsed),
        header_names(expected),
    )
    head = message.data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        assert len(line) <= 998 and line.isascii(), line[:120]
        assert not line.lower().startswith((b"bcc:", b"x-evil:")), line
    assert "bcc" not in header_names(parsed) and not parsed.defects, parsed.defects
    for part in parsed.walk():
        if part is not parsed:
            assert set(header_names(part)) <= PART_HEADERS, header_names(part)


async def transactional(running: Running, **fields: Any) -> Any:
    return await running.client.post("/v1/transactional", headers=AUTH, json=fields)


def attachment(name: str) -> dict[str, str]:
    return {
        "filename": name,
        "content_type": "text/plain",
        "content_b64": base64.b64encode(b"hello").decode(),
    }


TRANSACTIONAL: dict[str, dict[str, Any]] = {
    "subject-crlf": {"subject": CRLF_BCC},
    "subject-lf": {"subject": f"Hi\nBcc: {INJECTED}"},
    "subject-cr": {"subject": f"Hi\rBcc: {INJECTED}"},
    "subject-body": {"subject": "Hi\r\n\r\n<h1>injected body</h1>"},
    "subject-encoded-word": {"subject": "=?utf-8?q?Hi=0D=0ABcc:_victim@evil.test?="},
    "subject-unicode-linebreaks": {"subject": "Hi\u2028Bcc: victim@evil.test\u0085X-Evil: 1"},
    "subject-long-token": {"subject": "A" * 1_990},
    "subject-long-unicode": {"subject": "Grüße " * 300},
    "header-value-crlf": {"headers": {"X-Ref": f"1\r\nBcc: {INJECTED}"}},
    "header-value-folding": {"headers": {"X-Ref": f"1\r\n Bcc: {INJECTED}"}},
    "attachment-crlf": {"attachments": [attachment(f"a\r\nBcc: {INJECTED}.txt")]},
    "attachment-quote": {"attachments": [attachment('a.txt"; name="evil.exe')]},
    "attachment-path": {"attachments": [attachment("../../etc/passwd")]},
    "attachment-long-unicode": {"attachments": [attachment("Ünïcødé " * 30 + ".txt")]},
    "attachment-encoded-word": {"attachments": [attachment("=?utf-8?q?x=0D=0AX-Evil:_1?=.txt")]},
}

REFUSED_AT_API = {
    "to-crlf": {"to": [f"a@example.org\r\nBcc: {INJECTED}"]},
    "to-display-name": {"to": [f"Eve <a@example.org>, {INJECTED}"]},
    "reply-to-crlf": {"reply_to": f"a@example.org\r\nBcc: {INJECTED}"},
    "in-reply-to-crlf": {"in_reply_to": f"<a@x>\r\nBcc: {INJECTED}"},
    "header-name-colon": {"headers": {"X-A: 1\r\nBcc": INJECTED}},
    "header-name-space": {"headers": {"X A": "1"}},
    "attachment-content-type": {
        "attachments": [{**attachment("a.txt"), "content_type": "text/plain\r\nBcc: x@y"}]
    },
}

REFUSED_BY_GATEWAY = {
    "header-bcc": ({"headers": {"Bcc": INJECTED}}, "bcc"),
    "header-from": ({"headers": {"From": INJECTED}}, "from"),
    "header-dkim": ({"headers": {"DKIM-Signature": "v=1; d=evil.test"}}, "dkim-signature"),
    "header-value-nul": ({"headers": {"X-Ref": "a\x00b"}}, "control characters"),
    "subject-nul": ({"subject": "a\x00b"}, "control characters"),
}


async def send_transactional(running: Running, case: str, fields: dict[str, Any]) -> tuple[str, Any]:
    rcpt = f"{case}@example.org"
    body = {
        "correlation_id": f"hdr-{case}-{running.names.id}",
        "to": [rcpt],
        "subject": "Hello",
        "text": "Hi",
    }
    reply = await transactional(running, **{**body, **fields})
    return rcpt, reply


async def test_transactional_fields_never_add_a_header(env: tuple[Running, SmtpSink]) -> None:
    running, sink = env
    shapes = {
        "plain": {},
        "headers": {"headers": {"X-Ref": "1"}},
        "attachments": {"attachments": [attachment("a.txt")]},
    }
    for shape, fields in shapes.items():
        _, reply = await send_transactional(running, f"control-{shape}", fields)
        assert reply.status_code == 202, reply.text
    sent = {}
    for case, fields in TRANSACTIONAL.items():
        rcpt, reply = await send_transactional(running, case, fields)
        assert reply.status_code == 202, (case, reply.text)
        sent[case] = rcpt
    controls = {shape: await arrived(sink, f"control-{shape}@example.org") for shape in shapes}
    outcomes = {}
    for case, rcpt in sent.items():
        outcome = await eventually(
            lambda r=rcpt, c=case: delivered_or_refused(running, sink, c, r), timeout=60
        )
        outcomes[case] = outcome if isinstance(outcome, str) else "delivered"
        if isinstance(outcome, str):  # refused: the reason must say what was wrong
            assert "line break" in outcome or "control characters" in outcome, (case, outcome)
            continue
        shape = next((k for k in ("headers", "attachments") if k in TRANSACTIONAL[case]), "plain")
        assert_clean(outcome, controls[shape], rcpt)
        parsed = parse_mail(outcome.data)
        if case.startswith("attachment"):
            [part] = [p for p in parsed.walk() if p.get_filename()]
            name = part.get_filename()
            assert name and "/" not in name and "\r" not in name and "\n" not in name, name
            assert part.get_content() in ("hello", b"hello")
    print(f"\nRESULT transactional_outcomes={json.dumps(outcomes)}")


async def delivered_or_refused(
    running: Running, sink: SmtpSink, case: str, rcpt: str
) -> SmtpMessage | str | None:
    """The message at the sink, or the gateway's reason for refusing it (status failed)."""
    mine = [m for m in sink.messages if rcpt in m.rcpt_tos]
    if mine:
        return mine[0]
    row = (await running.client.get(f"/v1/transactional/hdr-{case}-{running.names.id}", headers=AUTH)).json()
    if row.get("status") == "failed":
        return str(row.get("last_error") or row)
    return None


async def test_hostile_addresses_and_header_names_are_refused_at_the_api(
    env: tuple[Running, SmtpSink],
) -> None:
    running, _ = env
    for case, fields in REFUSED_AT_API.items():
        _, reply = await send_transactional(running, case, fields)
        assert reply.status_code == 422, (case, reply.status_code, reply.text[:300])


async def test_reserved_headers_and_control_characters_fail_with_a_clear_reason(
    env: tuple[Running, SmtpSink],
) -> None:
    running, sink = env
    for case, (fields, fragment) in REFUSED_BY_GATEWAY.items():
        rcpt, reply = await send_transactional(running, case, fields)
        if reply.status_code == 422:
            assert fragment in reply.text.lower(), (case, reply.text)
            continue
        assert reply.status_code == 202, (case, reply.text)
        correlation = f"hdr-{case}-{running.names.id}"

        async def failed(correlation: str = correlation) -> dict | None:
            row = (await running.client.get(f"/v1/transactional/{correlation}", headers=AUTH)).json()
            return row if row.get("status") == "failed" else None

        row = await eventually(failed, timeout=60)
        assert fragment in json.dumps(row).lower(), (case, row)
        assert not [m for m in sink.messages if rcpt in m.rcpt_tos]  # decided before any SMTP attempt


async def test_sender_display_names_cannot_inject(env: tuple[Running, SmtpSink]) -> None:
    running, sink = env
    relay = {"host": sink.host, "port": sink.port, "tls": "none"}
    for name, display in (("crlf", "Support\r\nBcc: victim@evil.test"), ("lf", "Support\nX-Evil: 1")):
        reply = await running.client.post(
            "/v1/sender-identities",
            headers=AUTH,
            json={
                "name": f"evil-{name}",
                "email": "support@example.com",
                "display_name": display,
                "relay": relay,
            },
        )
        assert reply.status_code == 422, (name, reply.text)
    tricky = {
        "quote": 'Support" <attacker@evil.test>, "x',
        "comma": "Support, Billing <attacker@evil.test>",
        "encoded": "=?utf-8?q?Support=0D=0ABcc:_victim@evil.test?=",
        "unicode": "Sérvice Ünïcødé\u2028Bcc: victim@evil.test",
    }
    for name, display in tricky.items():
        reply = await running.client.post(
            "/v1/sender-identities",
            headers=AUTH,
            json={
                "name": f"id-{name}",
                "email": f"{name}@example.com",
                "display_name": display,
                "relay": relay,
            },
        )
        assert reply.status_code in (201, 422), (name, reply.text)
        if reply.status_code == 422:
            continue
        rcpt, sent = await send_transactional(running, f"identity-{name}", {"sender_identity": f"id-{name}"})
        assert sent.status_code == 202, sent.text
        control = await arrived(sink, (await send_transactional(running, f"identity-control-{name}", {}))[0])
        message = await arrived(sink, rcpt)
        assert_clean(message, control, rcpt)
        sender = parse_mail(message.data)["From"]
        assert [a.addr_spec for a in sender.addresses] == [f"{name}@example.com"], str(sender)
        assert message.mail_from == f"{name}@example.com"


async def test_template_subject_merge_data_never_adds_a_header(env: tuple[Running, SmtpSink]) -> None:
    running, sink = env
    template = await running.client.post(
        "/v1/templates",
        headers=AUTH,
        json={
            "name": "Merge subject",
            "subject": "Hi {{ contact.first_name }} from {{ contact.custom.city }}",
            "design": one_column(text("Hello {{ contact.first_name }}")),
        },
    )
    assert template.status_code == 201, template.text
    template_id = str(template.json()["id"])
    contacts = {
        "merge-control": {"first_name": "Eve", "custom": {"city": "Berlin"}},
        "merge-name": {"first_name": CRLF_BCC, "custom": {"city": "Berlin"}},
        "merge-city": {"first_name": "Eve", "custom": {"city": "Berlin\r\nX-Evil: 1"}},
        "merge-both": {"first_name": "\r\n\r\nbody", "custom": {"city": "=?utf-8?q?x=0D=0AX-Evil:_1?="}},
    }
    for case, contact in contacts.items():
        _, reply = await send_transactional(
            running,
            case,
            {"template_id": template_id, "merge_data": {"contact": contact}, "text": None, "subject": ""},
        )
        assert reply.status_code == 202, (case, reply.text)
    control = await arrived(sink, "merge-control@example.org")
    for case in contacts:
        message = await arrived(sink, f"{case}@example.org")
        assert_clean(message, control, f"{case}@example.org")


# --- bulk mail: contact names and custom fields from CSV and crm.contacts -------------------

HOSTILE_CSV = (
    "contact_id,email,first_name,last_name,language,email_opt_out,city\r\n"
    "b-control,b-control@example.org,Eve,Control,en,no,Berlin\r\n"
    '"b-crlf","b-crlf@example.org","Eve\r\nBcc: victim@evil.test","X",en,no,Berlin\r\n'
    '"b-city","b-city@example.org",Eve,"Y",en,no,"Berlin\r\nX-Evil: 1"\r\n'
    '"b-quote","b-quote@example.org","Eve"" <victim@evil.test>, ""x","Z",en,no,Berlin\r\n'
    '"b-encoded","b-encoded@example.org","=?utf-8?q?x=0D=0ABcc:_victim@evil.test?=",W,en,no,"=?utf-8?b?QmNjOiB4?="\r\n'
    '"b-unicode","b-unicode@example.org","Ève\u2028Bcc: victim@evil.test",V,en,no,"Zürich\u0085X-Evil: 1"\r\n'
)
KAFKA_CONTACTS = {
    "k-crlf": {"first_name": CRLF_BCC, "last_name": "K", "custom_fields": {"city": "Berlin\r\nX-Evil: 1"}},
    "k-body": {
        "first_name": "\r\n\r\n<h1>x</h1>",
        "last_name": "K",
        "custom_fields": {"city": "\n\nX-Evil: 1"},
    },
}


async def test_bulk_mail_with_hostile_contact_data_never_adds_a_header(
    env: tuple[Running, SmtpSink], kafka_broker
) -> None:
    running, sink = env
    client = running.client
    identity = {
        "name": "News", "email": "news@example.com", "display_name": "Newsletter",
        "relay": {"host": sink.host, "port": sink.port, "tls": "none"},
    }  # fmt: skip
    created = await client.post("/v1/sender-identities", headers=AUTH, json=identity)
    assert created.status_code == 201, created.text
    imported = await client.post(
        "/v1/contacts/import", headers={**AUTH, "Content-Type": "text/csv"}, content=HOSTILE_CSV.encode()
    )
    assert imported.status_code == 200, imported.text
    report = imported.json()
    for contact_id, fields in KAFKA_CONTACTS.items():
        message = {
            "kind": "contact.upserted",
            "contact_id": contact_id,
            "email": f"{contact_id}@example.org",
            **fields,
        }
        await produce(
            kafka_broker.bootstrap, running.topic("crm.contacts"), [message], key=contact_id.encode()
        )
    for contact_id in KAFKA_CONTACTS:
        await eventually(lambda c=contact_id: _status(client, f"/v1/contacts/{c}", 200), timeout=60)  # type: ignore[misc]
    ids = ["b-control", "b-crlf", "b-city", "b-quote", "b-encoded", "b-unicode", *KAFKA_CONTACTS]
    stored = [i for i in ids if (await client.get(f"/v1/contacts/{i}", headers=AUTH)).status_code == 200]
    refused = set(ids) - set(stored)
    # A refused CSV row must be reported with its line and a reason; nothing silently dropped.
    # A refused CSV row is reported with its row number and a clear reason; nothing is dropped silently.
    assert report["rejected"] == len(refused), (report, refused)
    assert all(e["row"] > 1 and "control characters" in e["error"] for e in report["errors"]), report
    assert "b-control" in stored and set(KAFKA_CONTACTS) <= set(stored)

    group = await client.post(
        "/v1/target-groups", headers=AUTH, json={"id": "hostile", "name": "H", "active": True}
    )
    assert group.status_code == 201, group.text
    added = await client.post("/v1/target-groups/hostile/members", headers=AUTH, json={"contact_ids": stored})
    assert added.status_code == 200, added.text
    template = await client.post(
        "/v1/templates",
        headers=AUTH,
        json={
            "name": "Bulk merge subject",
            "subject": "News for {{ contact.first_name }} in {{ contact.custom.city }}",
            "design": one_column(text("Hello {{ contact.first_name }} {{ contact.last_name }}")),
        },
    )
    assert template.status_code == 201, template.text
    mailing = await client.post(
        "/v1/mailings",
        headers=AUTH,
        json={
            "name": "Hostile",
            "target_group_id": "hostile",
            "template_id": template.json()["id"],
            "sender_identity": "News",
        },
    )
    assert mailing.status_code == 201, mailing.text
    started_ = await client.post(f"/v1/mailings/{mailing.json()['id']}/send-now", headers=AUTH)
    assert started_.status_code == 200, started_.text

    control = await arrived(sink, "b-control@example.org")
    for contact_id in stored:
        rcpt = f"{contact_id}@example.org"
        message = await arrived(sink, rcpt)
        assert_clean(message, control, rcpt)
        to = parse_mail(message.data)["To"]
        assert [a.addr_spec for a in to.addresses] == [rcpt], str(to)


async def _status(client: Any, path: str, status: int) -> bool:
    return (await client.get(path, headers=AUTH)).status_code == status
