"""Tables of the templates feature: the editable template and its immutable versions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


class MailTemplate(SQLModel, table=True):
    """What a marketer edits. Each save adds a MailTemplateVersion; ``current_version_id`` is
    the latest. Deleting only marks the row (mailings keep pointing at their versions)."""

    __tablename__ = "mm_template"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, index=True)
    subject: str = Field(max_length=2_000)
    preheader: str = Field(default="", max_length=1_000)
    sender_identity: str | None = Field(default=None, max_length=200)
    active: bool = True
    survey_valid_days: int | None = 30
    design: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    current_version_id: int | None = None
    version_count: int = 0
    deleted: bool = False
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class MailTemplateVersion(SQLModel, table=True):
    """A saved state of a template with its rendered HTML and text (merge tags still in)."""

    __tablename__ = "mm_template_version"
    __table_args__ = (UniqueConstraint("template_id", "number", name="uq_mm_template_version_number"),)

    id: int | None = Field(default=None, primary_key=True)
    template_id: int = Field(foreign_key="mm_template.id", index=True)
    number: int
    name: str = Field(max_length=200)
    subject: str = Field(max_length=2_000)
    preheader: str = Field(default="", max_length=1_000)
    sender_identity: str | None = Field(default=None, max_length=200)
    active: bool = True
    survey_valid_days: int | None = None
    design: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    mjml: str = Field(sa_column=Column(Text, nullable=False))
    html: str = Field(sa_column=Column(Text, nullable=False))
    text: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=_now)
