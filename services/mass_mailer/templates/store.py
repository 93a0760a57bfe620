"""Queries for templates and versions, the catalogue events, and the compiled-version lookups
other parts of the mass mailer (mailings, senders, event triggers) call."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from services.mass_mailer.templates.compiled import CACHE, CompiledTemplate
from services.mass_mailer.templates.models import MailTemplate, MailTemplateVersion
from services.mass_mailer.templates.render import RenderedDesign
from shared import outbox, topics
from shared.contracts import TemplateChanged

CATALOGUE_NAMESPACE = uuid.UUID("5b1d8f0e-7d4c-4c1e-9a57-3f0f4f6b8e21")


def _database(session: Session) -> str:
    return session.get_bind().url.render_as_string(hide_password=True)


def get_template(session: Session, template_id: int) -> MailTemplate | None:
    row = session.get(MailTemplate, template_id)
    return None if row is None or row.deleted else row


def list_templates(session: Session, *, active: bool | None = None) -> list[MailTemplate]:
    query = select(MailTemplate).where(col(MailTemplate.deleted).is_(False))
    if active is not None:
        query = query.where(MailTemplate.active == active)
    return list(session.exec(query.order_by(col(MailTemplate.id))).all())


def list_versions(session: Session, template_id: int) -> list[MailTemplateVersion]:
    query = select(MailTemplateVersion).where(MailTemplateVersion.template_id == template_id)
    return list(session.exec(query.order_by(col(MailTemplateVersion.number))).all())


def get_version(session: Session, template_id: int, version_id: int) -> MailTemplateVersion | None:
    row = session.get(MailTemplateVersion, version_id)
    return row if row is not None and row.template_id == template_id else None


def _publish(session: Session, template: MailTemplate, kind: str) -> None:
    """Catalogue event in the same transaction; message_id is stable for (template, version)."""
    marker = "deleted" if kind == "template.deleted" else str(template.current_version_id)
    event = TemplateChanged(
        message_id=uuid.uuid5(CATALOGUE_NAMESPACE, f"{template.id}:{marker}"),
        kind=kind,  # type: ignore[arg-type]
        template_id=template.id or 0,
        name=template.name,
        active=template.active and kind != "template.deleted",
        current_version_id=template.current_version_id,
        subject=template.subject,
    )
    outbox.enqueue(session, topics.MAIL_TEMPLATES, event, key=str(template.id))


def save_version(session: Session, template: MailTemplate, rendered: RenderedDesign) -> MailTemplateVersion:
    """Store the template's current fields as a new immutable version and announce it."""
    template.version_count += 1
    template.updated_at = datetime.now(UTC)
    session.add(template)
    session.flush()
    version = MailTemplateVersion(
        template_id=template.id or 0,
        number=template.version_count,
        name=template.name,
        subject=template.subject,
        preheader=template.preheader,
        sender_identity=template.sender_identity,
        active=template.active,
        survey_valid_days=template.survey_valid_days,
        design=template.design,
        mjml=rendered.mjml,
        html=rendered.html,
        text=rendered.text,
    )
    session.add(version)
    session.flush()
    template.current_version_id = version.id
    session.add(template)
    session.flush()
    _publish(session, template, "template.upserted")
    return version


def create_template(session: Session, fields: dict[str, Any], rendered: RenderedDesign) -> MailTemplate:
    template = MailTemplate(**fields)
    session.add(template)
    session.flush()
    save_version(session, template, rendered)
    return template


def delete_template(session: Session, template: MailTemplate) -> None:
    """Mark deleted (versions stay for mailings and audit) and announce it."""
    template.deleted = True
    template.active = False
    template.updated_at = datetime.now(UTC)
    session.add(template)
    session.flush()
    _publish(session, template, "template.deleted")


def compile_version(version: MailTemplateVersion) -> CompiledTemplate:
    return CompiledTemplate(
        template_id=version.template_id,
        version_id=version.id or 0,
        subject=version.subject,
        html=version.html,
        text=version.text,
        sender_identity=version.sender_identity,
        survey_valid_days=version.survey_valid_days,
    )


def compiled_version(session: Session, version_id: int) -> CompiledTemplate:
    """The compiled version (cached per process); KeyError if there is no such version."""
    database = _database(session)
    cached = CACHE.get(database, version_id)
    if cached is not None:
        return cached
    version = session.get(MailTemplateVersion, version_id)
    if version is None:
        raise KeyError(version_id)
    return CACHE.put(database, compile_version(version))


def current_version(session: Session, template_id: int) -> CompiledTemplate | None:
    """The latest version of an active, not deleted template; None otherwise."""
    template = session.get(MailTemplate, template_id)
    if template is None or template.deleted or not template.active or template.current_version_id is None:
        return None
    return compiled_version(session, template.current_version_id)
