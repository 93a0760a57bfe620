"""HTTP API for templates: CRUD (every save is a new immutable version), versions, preview with
screenshots, test links, and rendering an unsaved design. Scopes: templates:read / templates:write."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from services.mass_mailer import sender_store
from services.mass_mailer.templates import links as links_mod
from services.mass_mailer.templates import store
from services.mass_mailer.templates.compiled import RESERVED_NAMES, CompiledTemplate
from services.mass_mailer.templates.content import DesignError
from services.mass_mailer.templates.merge import MergeError, compile_merge
from services.mass_mailer.templates.models import MailTemplate, MailTemplateVersion
from services.mass_mailer.templates.preview import PreviewUnavailable, screenshots
from services.mass_mailer.templates.render import RenderedDesign, render_design
from shared.apikeys import require_scope
from shared.db import in_transaction
from shared.service import ServiceContext

T = TypeVar("T")
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
Subject = Annotated[str, Field(min_length=1, max_length=2_000, pattern=r"^[^\x00-\x1f\x7f]+$")]
Preheader = Annotated[str, Field(max_length=1_000, pattern=r"^[^\x00-\x1f\x7f]*$")]
SurveyDays = Annotated[int, Field(ge=1, le=3_650)]
SAMPLE_CONTACT = {
    "first_name": "Alex",
    "last_name": "Example",
    "email": "alex@example.test",
    "language": "en",
    "custom": {},
}


class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    subject: Subject
    preheader: Preheader = ""
    sender_identity: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    active: bool = True
    survey_valid_days: SurveyDays | None = Field(
        links_mod.DEFAULT_SURVEY_VALID_DAYS,
        description="Survey links expire this long after sending; null = never",
    )
    design: dict[str, Any] = Field(description="MJML-JSON: {tagName, attributes, children | content}")


class TemplatePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    subject: Subject | None = None
    preheader: Preheader | None = None
    sender_identity: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    active: bool | None = None
    survey_valid_days: SurveyDays | None = None
    design: dict[str, Any] | None = None


class TemplateOut(BaseModel):
    id: int
    name: str
    subject: str
    preheader: str
    sender_identity: str | None
    active: bool
    survey_valid_days: int | None
    design: dict[str, Any]
    current_version_id: int | None
    version_count: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: MailTemplate) -> TemplateOut:
        return cls.model_validate(row, from_attributes=True)


class VersionSummary(BaseModel):
    id: int
    template_id: int
    number: int
    name: str
    subject: str
    active: bool
    html_chars: int
    created_at: datetime


class VersionOut(VersionSummary):
    preheader: str
    sender_identity: str | None
    survey_valid_days: int | None
    design: dict[str, Any]
    mjml: str
    html: str
    text: str


def etag(version_id: int | None) -> str:
    return f'"{version_id or 0}"'


def check_if_match(if_match: str | None, current: TemplateOut) -> None:
    """RFC 9110 If-Match against the template's current version: ``*`` or a list of ETags."""
    if if_match is None or if_match.strip() == "*":
        return
    tags = {tag.strip().removeprefix("W/") for tag in if_match.split(",")}
    if etag(current.current_version_id) not in tags:
        raise HTTPException(
            412,
            f"the template was saved by someone else meanwhile: it is now at version "
            f"{current.version_count} (ETag {etag(current.current_version_id)}); reload it and "
            "apply your change again",
        )


def _summary(row: MailTemplateVersion) -> VersionSummary:
    return VersionSummary(
        id=row.id or 0, template_id=row.template_id, number=row.number, name=row.name,
        subject=row.subject, active=row.active, html_chars=len(row.html), created_at=row.created_at,
    )  # fmt: skip


def _full(row: MailTemplateVersion) -> VersionOut:
    return VersionOut(
        **_summary(row).model_dump(), preheader=row.preheader, sender_identity=row.sender_identity,
        survey_valid_days=row.survey_valid_days, design=row.design, mjml=row.mjml, html=row.html,
        text=row.text,
    )  # fmt: skip


class SampleData(BaseModel):
    """Merge data for previews: a contact, link URLs and further top-level names."""

    model_config = ConfigDict(extra="forbid")

    contact: dict[str, Any] = Field(default_factory=lambda: dict(SAMPLE_CONTACT))
    links: dict[str, Annotated[str, Field(max_length=2_000)]] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("extra")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not key.isidentifier() or key.startswith("_") or key in RESERVED_NAMES:
                raise ValueError(f"'{key}' cannot be a merge name")
        return value


class Screenshot(BaseModel):
    width: int
    height: int
    png_base64: str


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version_id: int | None = Field(None, description="Default: the current version")
    data: SampleData = Field(default_factory=SampleData)
    screenshots: bool = True


class RenderedOut(BaseModel):
    subject: str
    html: str
    text: str
    screenshots: list[Screenshot] = []


class RenderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    design: dict[str, Any]
    subject: Annotated[str, Field(max_length=2_000)] = ""
    preheader: Preheader = ""
    data: SampleData | None = Field(
        None, description="Merge data; omit to get the template with its merge tags"
    )


class RenderOut(BaseModel):
    mjml: str
    html: str
    text: str
    subject: str
    html_chars: int


class LinkReportOut(BaseModel):
    url: str
    tag: str
    attribute: str
    kind: str
    syntax_ok: bool
    status: str
    http_status: int | None
    detail: str


class LinkTestOut(BaseModel):
    version_id: int
    links: list[LinkReportOut]
    broken: int


def _unprocessable(exc: DesignError | MergeError) -> HTTPException:
    return HTTPException(422, str(exc))


def _render(design: dict[str, Any], subject: str, preheader: str) -> RenderedDesign:
    compile_merge(subject, html=False, where="subject")
    if preheader:
        compile_merge(preheader, html=True, where="preheader")
    return render_design(design, preheader=preheader)


async def _render_async(design: dict[str, Any], subject: str, preheader: str) -> RenderedDesign:
    try:
        return await asyncio.to_thread(_render, design, subject, preheader)
    except (DesignError, MergeError) as exc:
        raise _unprocessable(exc) from exc


def _check_sender(session: Session, ref: str | None) -> None:
    if ref is not None and sender_store.identity_by_ref(session, ref) is None:
        raise HTTPException(422, f"sender_identity: no sender identity '{ref}'")


def routers(context: ServiceContext) -> list[APIRouter]:
    router = APIRouter(prefix="/v1/templates", tags=["templates"])
    read = [Depends(require_scope("templates:read"))]
    write = [Depends(require_scope("templates:write"))]
    settings = context.settings

    async def db(work: Callable[..., T], *args: object) -> T:
        try:
            return await in_transaction(context.database_url, work, *args)
        except IntegrityError as exc:
            raise HTTPException(409, "a concurrent save conflicted; try again") from exc

    def _get(session: Session, template_id: int) -> MailTemplate:
        row = store.get_template(session, template_id)
        if row is None:
            raise HTTPException(404, "no such template")
        return row

    def _get_for_update(session: Session, template_id: int) -> MailTemplate:
        """The row, locked until commit on PostgreSQL: two saves cannot both pass If-Match."""
        row = session.exec(
            select(MailTemplate).where(MailTemplate.id == template_id).with_for_update()
        ).first()
        if row is None:
            raise HTTPException(404, "no such template")
        return row

    @router.post("", status_code=201, dependencies=write, summary="Create a template (version 1)")
    async def create_template(body: TemplateIn) -> TemplateOut:
        rendered = await _render_async(body.design, body.subject, body.preheader)

        def work(session: Session) -> TemplateOut:
            _check_sender(session, body.sender_identity)
            row = store.create_template(session, body.model_dump(), rendered)
            return TemplateOut.of(row)

        out = await db(work)
        context.outbox.wake()
        return out

    @router.get("", dependencies=read)
    async def list_templates(active: bool | None = None) -> list[TemplateOut]:
        return await db(lambda s: [TemplateOut.of(r) for r in store.list_templates(s, active=active)])

    @router.get("/{template_id}", dependencies=read)
    async def get_template(template_id: int, response: Response) -> TemplateOut:
        out = await db(lambda s: TemplateOut.of(_get(s, template_id)))
        response.headers["ETag"] = etag(out.current_version_id)
        return out

    @router.patch(
        "/{template_id}",
        dependencies=write,
        summary="Change a template (saves a new version)",
        description="Send `If-Match` with the ETag of what you read (GET returns it: the current "
        "version) and the change is refused with 412 if someone saved the template meanwhile, "
        "instead of silently replacing their version.",
    )
    async def update_template(
        template_id: int,
        body: TemplatePatch,
        response: Response,
        if_match: Annotated[str | None, Header()] = None,
    ) -> TemplateOut:
        changes = body.model_dump(exclude_unset=True)
        for field, value in changes.items():
            if value is None and field not in ("sender_identity", "survey_valid_days"):
                raise HTTPException(422, f"{field} cannot be null")
        current = await db(lambda s: TemplateOut.of(_get(s, template_id)))
        check_if_match(if_match, current)
        merged = current.model_dump() | changes
        rendered = await _render_async(merged["design"], merged["subject"], merged["preheader"])

        def work(session: Session) -> TemplateOut:
            row = _get_for_update(session, template_id)
            check_if_match(if_match, TemplateOut.of(row))
            if "sender_identity" in changes:
                _check_sender(session, changes["sender_identity"])
            for field, value in changes.items():
                setattr(row, field, value)
            row.design = merged["design"]  # the design that was rendered above
            store.save_version(session, row, rendered)
            return TemplateOut.of(row)

        out = await db(work)
        context.outbox.wake()
        response.headers["ETag"] = etag(out.current_version_id)
        return out

    @router.delete("/{template_id}", status_code=204, dependencies=write)
    async def delete_template(template_id: int) -> Response:
        await db(lambda s: store.delete_template(s, _get(s, template_id)))
        context.outbox.wake()
        return Response(status_code=204)

    @router.get("/{template_id}/versions", dependencies=read)
    async def list_versions(template_id: int) -> list[VersionSummary]:
        def work(session: Session) -> list[VersionSummary]:
            _get(session, template_id)
            return [_summary(v) for v in store.list_versions(session, template_id)]

        return await db(work)

    @router.get("/{template_id}/versions/{version_id}", dependencies=read)
    async def get_version(template_id: int, version_id: int) -> VersionOut:
        def work(session: Session) -> VersionOut:
            row = store.get_version(session, template_id, version_id)
            if row is None:
                raise HTTPException(404, "no such version of this template")
            return _full(row)

        return await db(work)

    def _version_for(session: Session, template_id: int, version_id: int | None) -> CompiledTemplate:
        row = _get(session, template_id)
        wanted = version_id if version_id is not None else row.current_version_id
        if wanted is None or store.get_version(session, template_id, wanted) is None:
            raise HTTPException(404, "no such version of this template")
        return store.compiled_version(session, wanted)

    @router.post(
        "/{template_id}/preview", dependencies=read, summary="Rendered HTML/text and PNG screenshots"
    )
    async def preview(template_id: int, body: PreviewIn) -> RenderedOut:
        compiled = await db(_version_for, template_id, body.version_id)
        mail = compiled.render(contact=body.data.contact, links=body.data.links, extra=body.data.extra)
        shots: list[Screenshot] = []
        if body.screenshots:
            try:
                images = await screenshots(
                    mail.html, chromium=settings.templates_chromium, height=settings.templates_preview_height
                )
            except PreviewUnavailable as exc:
                raise HTTPException(503, str(exc)) from exc
            shots = [
                Screenshot(width=i.width, height=i.height, png_base64=base64.b64encode(i.png).decode())
                for i in images
            ]
        return RenderedOut(subject=mail.subject, html=mail.html, text=mail.text, screenshots=shots)

    @router.post("/{template_id}/test-links", dependencies=write, summary="Check every link of a template")
    async def test_links(template_id: int, version_id: int | None = None) -> LinkTestOut:
        compiled = await db(_version_for, template_id, version_id)
        html = await db(lambda s: s.get(MailTemplateVersion, compiled.version_id).html)  # type: ignore[union-attr]
        reports = await links_mod.check_links(
            html,
            external=settings.templates_link_check_external,
            timeout_s=settings.templates_link_check_timeout_s,
        )
        items = [LinkReportOut(**r.__dict__) for r in reports]
        return LinkTestOut(
            version_id=compiled.version_id, links=items, broken=sum(r.status == "broken" for r in reports)
        )

    @router.post("/render", dependencies=read, summary="Render an unsaved design")
    async def render_unsaved(body: RenderIn) -> RenderOut:
        rendered = await _render_async(body.design, body.subject, body.preheader)
        subject, html, text = body.subject, rendered.html, rendered.text
        if body.data is not None:
            compiled = CompiledTemplate(
                template_id=0, version_id=0, subject=body.subject, html=html, text=text
            )
            mail = compiled.render(contact=body.data.contact, links=body.data.links, extra=body.data.extra)
            subject, html, text = mail.subject, mail.html, mail.text
        return RenderOut(
            mjml=rendered.mjml, html=html, text=text, subject=subject, html_chars=len(rendered.html)
        )

    return [router]
