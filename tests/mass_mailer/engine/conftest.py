"""Fixtures of the mailing-engine tests: the mass mailer with the engine wired in, a template,
a sender identity with a DKIM key, contacts from CSV and a target group."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select

from shared.db import in_transaction
from shared.secretbox import generate_master_key
from shared.settings import Settings
from tests.integration.harness import AUTH, eventually, service_settings
from tests.mass_mailer.designs import one_column, text

DESIGN = one_column(
    text('Hallo {{ contact.first_name | default("Kunde") }}, Ihre Stadt: {{ contact.custom.city }}'),
    {"tagName": "mj-button", "attributes": {"href": "{{ links.unsubscribe }}"}, "content": "Abmelden"},
    {"tagName": "mj-button", "attributes": {"href": "{{ links.survey }}"}, "content": "Umfrage"},
)
SURVEY_URL = "https://survey.example.org/q/1"
SUBJECT = 'News für {{ contact.first_name | default("Kunde") }}'


@pytest.fixture
def engine_settings(kafka_broker, unique, smtp_sink, tmp_path) -> Settings:
    return service_settings(
        kafka_broker, unique, tmp_path,
        master_key=generate_master_key(),
        mail_domain="mail.example.com",
        mailing_public_url="https://mailer.example.com/p",
        mailing_scheduler_interval_s=0.2,
        mailing_retry_base_s=0.3,
        mailing_retry_max_s=1.0,
        mailing_lease_s=3.0,
        mailing_batch_size=20,
        gateway_sweep_interval_s=0.2,
    )  # fmt: skip


async def create_template(client: Any, settings: Settings) -> int:
    """Through the templates API when it is there, else through the templates store."""
    body = {"name": "Newsletter", "subject": SUBJECT, "design": DESIGN}
    reply = await client.post("/v1/templates", headers=AUTH, json=body)
    if reply.status_code == 201:
        return int(reply.json()["id"])
    from services.mass_mailer.templates import render
    from services.mass_mailer.templates import store as template_store

    rendered = render.render_design(DESIGN)

    def work(session: Any) -> int:
        template = template_store.create_template(
            session, {"name": "Newsletter", "subject": SUBJECT}, rendered
        )
        return int(template.id)

    return await in_transaction(settings.service_database_url("mass_mailer"), work)


async def create_identity(client: Any, smtp_sink: Any, pool_size: int = 4) -> list[dict]:
    reply = await client.post(
        "/v1/dkim-keys", headers=AUTH, json={"domain": "example.com", "selector": "s1", "algorithm": "rsa"}
    )
    assert reply.status_code == 201, reply.text
    identity = {
        "name": "News", "email": "news@example.com", "display_name": "Newsletter",
        "relay": {"host": smtp_sink.host, "port": smtp_sink.port, "tls": "none"},
        "dkim_domain": "example.com", "pool_size": pool_size,
    }  # fmt: skip
    created = await client.post("/v1/sender-identities", headers=AUTH, json=identity)
    assert created.status_code == 201, created.text
    records = await client.get(f"/v1/sender-identities/{created.json()['id']}/dns-records", headers=AUTH)
    return records.json()


def contacts_csv(count: int, *, extra_rows: str = "") -> bytes:
    lines = ["contact_id,email,first_name,last_name,language,email_opt_out,city"]
    lines += [f"c{i:05d},r{i:05d}@example.org,Name{i},Last,de,no,Stadt{i}" for i in range(count)]
    return ("\r\n".join(lines) + "\r\n" + extra_rows).encode()


async def import_group(client: Any, csv_bytes: bytes, group_id: str = "g1") -> dict:
    reply = await client.post("/v1/contacts/import", headers=AUTH, content=csv_bytes)
    assert reply.status_code == 200, reply.text
    report = reply.json()
    created = await client.post(
        "/v1/target-groups", headers=AUTH, json={"id": group_id, "name": "Group", "active": True}
    )
    assert created.status_code == 201, created.text
    ids = [line.split(b",")[0].decode() for line in csv_bytes.splitlines()[1:] if line]
    added = await client.post(
        f"/v1/target-groups/{group_id}/members", headers=AUTH, json={"contact_ids": ids}
    )
    assert added.status_code == 200, added.text
    return {**report, "members": added.json()}


async def create_mailing(client: Any, template_id: int, *, group_id: str = "g1", delay_s: float = 3.0) -> int:
    reply = await client.post(
        "/v1/mailings",
        headers=AUTH,
        json={
            "name": "Mailing",
            "target_group_id": group_id,
            "template_id": template_id,
            "sender_identity": "News",
            "survey_url": SURVEY_URL,
        },
    )
    assert reply.status_code == 201, reply.text
    mailing_id = reply.json()["id"]
    at = (datetime.now(UTC) + timedelta(seconds=delay_s)).isoformat()
    scheduled = await client.post(f"/v1/mailings/{mailing_id}/schedule", headers=AUTH, json={"at": at})
    assert scheduled.status_code == 200, scheduled.text
    return mailing_id


async def mailing(client: Any, mailing_id: int) -> dict:
    reply = await client.get(f"/v1/mailings/{mailing_id}", headers=AUTH)
    assert reply.status_code == 200, reply.text
    return reply.json()


async def wait_status(client: Any, mailing_id: int, *statuses: str, timeout: float = 120) -> dict:
    async def check() -> dict | None:
        found = await mailing(client, mailing_id)
        return found if found["status"] in statuses else None

    return await eventually(check, timeout=timeout, interval=0.2)


async def deliveries(client: Any, mailing_id: int) -> list[dict]:
    rows: list[dict] = []
    after = 0
    while True:
        reply = await client.get(
            f"/v1/mailings/{mailing_id}/deliveries", headers=AUTH, params={"after": after, "limit": 5000}
        )
        page = reply.json()
        if not page:
            return rows
        rows += page
        after = page[-1]["id"]


async def db_rows(settings: Settings, model: Any) -> list[Any]:
    return await in_transaction(
        settings.service_database_url("mass_mailer"), lambda s: list(s.exec(select(model)).all())
    )


def sink_count(sink: Any) -> int:
    return len(sink.accepted)


async def wait_sink(sink: Any, count: int, timeout: float = 120) -> list:
    return await asyncio.to_thread(sink.wait_for, count, timeout)
