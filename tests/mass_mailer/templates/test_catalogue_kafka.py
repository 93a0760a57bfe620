"""The template catalogue reaches Kafka through the outbox relay (real broker)."""

from __future__ import annotations

import json

from tests.integration import harness
from tests.mass_mailer.templates.helpers import newsletter
from tests.mass_mailer.templates.test_api import create_templates_app


async def test_template_changes_are_published_keyed_by_template_id(kafka_broker, unique, tmp_path):
    settings = harness.service_settings(kafka_broker, unique, tmp_path)
    async with harness.running(create_templates_app, settings) as client:
        created = await client.post(
            "/v1/templates",
            json={"name": "Welcome", "subject": "Hi", "design": newsletter()},
            headers=harness.AUTH,
        )
        assert created.status_code == 201, created.text
        tid = created.json()["id"]
        assert (await client.delete(f"/v1/templates/{tid}", headers=harness.AUTH)).status_code == 204
        records = await harness.consume(kafka_broker.bootstrap, unique("mail.templates"), 2)
    assert [r.key for r in records] == [str(tid).encode()] * 2
    payloads = [json.loads(r.value) for r in records]
    assert [p["kind"] for p in payloads] == ["template.upserted", "template.deleted"]
    assert payloads[0]["current_version_id"] == created.json()["current_version_id"]
    assert payloads[0]["name"] == "Welcome" and payloads[1]["active"] is False
