"""HTTP API: contact CSV import, GDPR export/erase, target groups, members, update tasks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, col, select

from services.mass_mailer.audience import csv_import, store
from services.mass_mailer.audience.conditions import Condition
from services.mass_mailer.audience.models import GroupUpdateTask, TargetGroup, TargetGroupMember
from shared.apikeys import require_scope
from shared.db import in_transaction
from shared.service import ServiceContext

MAX_CSV_BYTES = 20 * 1024 * 1024
GroupId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
ContactIds = Annotated[list[Annotated[str, Field(min_length=1, max_length=100)]], Field(max_length=10_000)]


class GroupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: GroupId | None = None
    name: Name
    active: bool = False
    group_type: Literal["email", "letter", "phone", "other"] = "email"
    conditions: Annotated[list[Condition], Field(max_length=50)] = Field(default_factory=list)


class GroupPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    active: bool | None = None
    conditions: Annotated[list[Condition], Field(max_length=50)] | None = None


class GroupOut(BaseModel):
    id: str
    name: str
    active: bool
    group_type: str
    conditions: list[dict[str, Any]]
    members: int


class MembersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_ids: ContactIds


class TaskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_group_id: GroupId
    active: bool = True
    interval_days: int = Field(1, ge=1, le=366)
    at_time: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] = "11:00"


class TaskPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: bool | None = None
    interval_days: int | None = Field(None, ge=1, le=366)
    at_time: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] | None = None


def _group_out(session: Session, group: TargetGroup) -> GroupOut:
    return GroupOut(
        id=group.id,
        name=group.name,
        active=group.active,
        group_type=group.group_type,
        conditions=group.conditions,
        members=store.member_count(session, group.id),
    )


def routers(context: ServiceContext) -> list[APIRouter]:
    router = APIRouter(prefix="/v1", tags=["contacts and target groups"])
    url = context.database_url
    read = [Depends(require_scope("contacts:read"))]
    write = [Depends(require_scope("contacts:write"))]

    @router.post("/contacts/import", dependencies=write, summary="Import contacts from CSV (header row)")
    async def import_csv(
        request: Request, delimiter: Literal[",", ";", "\t"] | None = None
    ) -> dict[str, Any]:
        data = bytearray()
        async for chunk in request.stream():
            data.extend(chunk)
            if len(data) > MAX_CSV_BYTES:
                raise HTTPException(413, f"CSV larger than {MAX_CSV_BYTES} bytes")
        try:
            parsed = csv_import.parse(bytes(data), delimiter=delimiter)
        except csv_import.CsvError as exc:
            raise HTTPException(422, str(exc)) from exc
        created, updated = await in_transaction(url, store.import_contacts, parsed.contacts)
        return {
            "encoding": parsed.encoding,
            "created": created,
            "updated": updated,
            "rejected": len(parsed.errors),
            "errors": [{"row": e.row, "error": e.error} for e in parsed.errors],
        }

    @router.get("/contacts/{contact_id}/export", dependencies=read, summary="GDPR: everything stored")
    async def export(contact_id: str) -> dict[str, Any]:
        found = await in_transaction(url, store.export_contact, contact_id)
        if found is None:
            raise HTTPException(404, "no such contact")
        return found

    @router.delete(
        "/contacts/{contact_id}", dependencies=write, status_code=204, summary="GDPR: erase a contact"
    )
    async def erase(contact_id: str) -> Response:
        if not await in_transaction(url, store.erase_contact, contact_id):
            raise HTTPException(404, "no such contact")
        return Response(status_code=204)

    @router.post("/target-groups", dependencies=write, status_code=201)
    async def create_group(body: GroupIn) -> GroupOut:
        def work(session: Session) -> GroupOut | None:
            group_id = body.id or uuid.uuid4().hex
            if session.get(TargetGroup, group_id) is not None:
                return None
            group = TargetGroup(
                id=group_id,
                name=body.name,
                active=body.active,
                group_type=body.group_type,
                conditions=[c.model_dump(mode="json") for c in body.conditions],
            )
            session.add(group)
            session.flush()
            return _group_out(session, group)

        created = await in_transaction(url, work)
        if created is None:
            raise HTTPException(409, "a target group with this id exists")
        return created

    @router.get("/target-groups", dependencies=read)
    async def list_groups() -> list[GroupOut]:
        def work(session: Session) -> list[GroupOut]:
            groups = session.exec(select(TargetGroup).order_by(col(TargetGroup.name)).limit(1_000)).all()
            return [_group_out(session, g) for g in groups]

        return await in_transaction(url, work)

    @router.get("/target-groups/{group_id}", dependencies=read)
    async def get_group(group_id: str) -> GroupOut:
        def work(session: Session) -> GroupOut | None:
            group = session.get(TargetGroup, group_id)
            return _group_out(session, group) if group else None

        found = await in_transaction(url, work)
        if found is None:
            raise HTTPException(404, "no such target group")
        return found

    @router.patch("/target-groups/{group_id}", dependencies=write)
    async def patch_group(group_id: str, body: GroupPatch) -> GroupOut:
        def work(session: Session) -> GroupOut | None:
            group = session.get(TargetGroup, group_id)
            if group is None:
                return None
            if body.name is not None:
                group.name = body.name
            if body.active is not None:
                group.active = body.active
            if body.conditions is not None:
                group.conditions = [c.model_dump(mode="json") for c in body.conditions]
            group.updated_at = datetime.now(UTC)
            session.add(group)
            return _group_out(session, group)

        found = await in_transaction(url, work)
        if found is None:
            raise HTTPException(404, "no such target group")
        return found

    @router.post("/target-groups/{group_id}/members", dependencies=write)
    async def add_members(group_id: str, body: MembersIn) -> dict[str, Any]:
        def work(session: Session) -> list[str] | None:
            if session.get(TargetGroup, group_id) is None:
                return None
            return store.add_members(session, group_id, body.contact_ids)

        refused = await in_transaction(url, work)
        if refused is None:
            raise HTTPException(404, "no such target group")
        return {
            "added_or_present": len(set(body.contact_ids)) - len(refused),
            "refused": refused[:1_000],
            "refused_reason": "unknown contact, no email address, or unsubscribed",
        }

    @router.delete("/target-groups/{group_id}/members/{contact_id}", dependencies=write, status_code=204)
    async def remove_member(group_id: str, contact_id: str) -> Response:
        await in_transaction(url, store.remove_members, group_id, [contact_id])
        return Response(status_code=204)

    @router.get("/target-groups/{group_id}/members", dependencies=read)
    async def list_members(group_id: str, after: str = "", limit: int = 500) -> list[dict[str, Any]]:
        limit = max(1, min(limit, 5_000))

        def work(session: Session) -> list[dict[str, Any]]:
            rows = session.exec(
                select(TargetGroupMember)
                .where(
                    TargetGroupMember.target_group_id == group_id, col(TargetGroupMember.contact_id) > after
                )
                .order_by(col(TargetGroupMember.contact_id))
                .limit(limit)
            ).all()
            return [r.model_dump(mode="json") for r in rows]

        return await in_transaction(url, work)

    @router.post(
        "/target-groups/{group_id}/evaluate", dependencies=write, summary="Re-evaluate conditions now"
    )
    async def evaluate(group_id: str) -> dict[str, int]:
        try:
            added, removed = await in_transaction(url, store.evaluate_conditions, group_id)
        except KeyError as exc:
            raise HTTPException(404, "no such target group") from exc
        return {"added": added, "removed": removed}

    @router.post("/target-group-tasks", dependencies=write, status_code=201)
    async def create_task(body: TaskIn) -> GroupUpdateTask:
        def work(session: Session) -> GroupUpdateTask | None:
            if session.get(TargetGroup, body.target_group_id) is None:
                return None
            task = GroupUpdateTask(
                **body.model_dump(), next_run_at=store.next_run(body.at_time, body.interval_days, store.now())
            )
            session.add(task)
            session.flush()
            return task

        task = await in_transaction(url, work)
        if task is None:
            raise HTTPException(404, "no such target group")
        return task

    @router.get("/target-group-tasks", dependencies=read)
    async def list_tasks() -> list[GroupUpdateTask]:
        return await in_transaction(url, lambda s: list(s.exec(select(GroupUpdateTask)).all()))

    @router.patch("/target-group-tasks/{task_id}", dependencies=write)
    async def patch_task(task_id: int, body: TaskPatch) -> GroupUpdateTask:
        def work(session: Session) -> GroupUpdateTask | None:
            task = session.get(GroupUpdateTask, task_id)
            if task is None:
                return None
            for name, value in body.model_dump(exclude_none=True).items():
                setattr(task, name, value)
            task.next_run_at = store.next_run(task.at_time, task.interval_days, store.now())
            session.add(task)
            return task

        task = await in_transaction(url, work)
        if task is None:
            raise HTTPException(404, "no such task")
        return task

    @router.delete("/target-group-tasks/{task_id}", dependencies=write, status_code=204)
    async def delete_task(task_id: int) -> Response:
        def work(session: Session) -> bool:
            task = session.get(GroupUpdateTask, task_id)
            if task is not None:
                session.delete(task)
            return task is not None

        if not await in_transaction(url, work):
            raise HTTPException(404, "no such task")
        return Response(status_code=204)

    return [router]
