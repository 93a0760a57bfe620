"""Tables of target groups, their members and the scheduled "update target group" tasks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


class TargetGroup(SQLModel, table=True):
    """A CRM "campaign": static members plus optional conditions on contact fields."""

    __tablename__ = "mm_target_group"

    id: str = Field(primary_key=True, max_length=100)
    name: str = Field(max_length=200)
    active: bool = False
    group_type: str = Field(default="email", max_length=20)
    conditions: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class TargetGroupMember(SQLModel, table=True):
    """Membership; ``source`` is ``static`` (API/CRM) or ``condition`` (the update task)."""

    __tablename__ = "mm_target_group_member"

    target_group_id: str = Field(primary_key=True, max_length=100)
    contact_id: str = Field(primary_key=True, max_length=100)
    source: str = Field(default="static", max_length=20)
    added_at: datetime = Field(default_factory=_now)


class GroupUpdateTask(SQLModel, table=True):
    """Re-evaluates a group's conditions every ``interval_days`` at ``at_time`` (UTC, HH:MM)."""

    __tablename__ = "mm_group_update_task"

    id: int | None = Field(default=None, primary_key=True)
    target_group_id: str = Field(index=True, max_length=100)
    active: bool = True
    interval_days: int = 1
    at_time: str = Field(default="11:00", max_length=5)
    next_run_at: datetime = Field(default_factory=_now, index=True)
    last_run_at: datetime | None = None
    last_result: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=_now)
