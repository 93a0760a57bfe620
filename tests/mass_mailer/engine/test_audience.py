"""Target groups: CRM membership messages through Kafka, conditions, the update task, GDPR erase
from the API; an unsubscribed contact is never (re)added."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from services.mass_mailer.audience.handlers import run_group_updates
from services.mass_mailer.audience.models import GroupUpdateTask
from shared.contracts import TargetGroupMembership
from shared.db import in_transaction
from tests.integration.harness import AUTH, eventually, produce, running
from tests.mass_mailer.engine.wiring import create_app

pytestmark = pytest.mark.timeout(180)
CSV = (
    "contact_id,email,first_name,language,city\r\n"
    "a,a@example.org,Anna,de,Köln\r\n"
    "b,b@example.org,Ben,en,Bonn\r\n"
    "c,c@example.org,Cem,de,Bonn\r\n"
    "n,,Nobody,de,Köln\r\n"
).encode("cp1252")


async def members(client, group_id: str) -> list[str]:
    reply = await client.get(f"/v1/target-groups/{group_id}/members", headers=AUTH)
    return [m["contact_id"] for m in reply.json()]


async def test_membership_conditions_and_update_task(engine_settings, kafka_broker):
    settings = engine_settings
    async with running(create_app, settings) as client:
        report = (await client.post("/v1/contacts/import", headers=AUTH, content=CSV)).json()
        assert (report["encoding"], report["created"], report["errors"]) == ("windows-1252", 4, [])
        bad = await client.post("/v1/target-groups", headers=AUTH, json={"name": "x", "conditions": [{"field": "__class__", "op": "eq"}]})  # fmt: skip
        assert bad.status_code == 422

        messages = [
            TargetGroupMembership(kind=kind, target_group_id="crm-7", contact_id=contact).model_dump(
                mode="json"
            )
            for kind, contact in [
                ("target_group.member_added", "a"),
                ("target_group.member_added", "b"),
                ("target_group.member_added", "n"),  # no email: never a member
                ("target_group.member_removed", "b"),
            ]
        ]
        await produce(kafka_broker.bootstrap, settings.topic("crm.target-groups"), messages, key=b"crm-7")

        async def crm_members() -> list[str] | None:
            found = await members(client, "crm-7")
            return found if found == ["a"] else None

        await eventually(crm_members)
        group = (await client.get("/v1/target-groups/crm-7", headers=AUTH)).json()
        assert group["active"] is False  # unknown CRM groups arrive inactive

        created = await client.post(
            "/v1/target-groups",
            headers=AUTH,
            json={"id": "bonn", "name": "Bonn", "active": True,
                  "conditions": [{"field": "custom.city", "op": "eq", "value": "bonn"}]},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        task = await client.post("/v1/target-group-tasks", headers=AUTH, json={"target_group_id": "bonn", "at_time": "11:00"})  # fmt: skip
        assert task.status_code == 201 and task.json()["next_run_at"] > datetime.now(UTC).isoformat()
        assert await run_group_updates_now(settings, task.json()["id"]) == 1
        assert await members(client, "bonn") == ["b", "c"]
        tasks = (await client.get("/v1/target-group-tasks", headers=AUTH)).json()
        assert tasks[0]["last_result"] == "ok: 2 added, 0 removed"

        # c moves away; a static member stays whatever the conditions say.
        await client.post(
            "/v1/contacts/import",
            headers=AUTH,
            content=b"contact_id,email,city\r\nc,c@example.org,Berlin\r\n",
        )
        await client.post("/v1/target-groups/bonn/members", headers=AUTH, json={"contact_ids": ["a"]})
        assert (await client.post("/v1/target-groups/bonn/evaluate", headers=AUTH)).json() == {
            "added": 0,
            "removed": 1,
        }
        assert await members(client, "bonn") == ["a", "b"]

        # Paused task does not run; deleting works.
        task_id = task.json()["id"]
        assert (await client.patch(f"/v1/target-group-tasks/{task_id}", headers=AUTH, json={"active": False})).status_code == 200  # fmt: skip
        assert await run_group_updates_now(settings, task_id) == 0
        assert (await client.delete(f"/v1/target-group-tasks/{task_id}", headers=AUTH)).status_code == 204

        # GDPR erase removes the contact and its memberships.
        assert (await client.delete("/v1/contacts/a", headers=AUTH)).status_code == 204
        assert await members(client, "bonn") == ["b"]
        assert (await client.delete("/v1/contacts/a", headers=AUTH)).status_code == 404


async def run_group_updates_now(settings, task_id: int) -> int:
    """Make the task due, then run the scheduled pass once."""
    url = settings.service_database_url("mass_mailer")

    def due(session) -> None:
        session.execute(
            update(GroupUpdateTask)
            .where(GroupUpdateTask.id == task_id)
            .values(next_run_at=datetime.now(UTC) - timedelta(seconds=1))
        )

    await in_transaction(url, due)

    class Context:
        database_url = url

    return await run_group_updates(Context())  # type: ignore[arg-type]
