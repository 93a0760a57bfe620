"""HTTP API of mailings (``/v1/mailings``) and the recipients' public endpoints: unsubscribe
(GET confirmation page, POST one-click, RFC 8058), view online, open-tracking pixel."""

from __future__ import annotations

import base64
import html
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, col, select

from services.mass_mailer.mailings import lifecycle, links, store
from services.mass_mailer.mailings.models import Delivery, Mailing
from services.mass_mailer.models import Contact
from shared.apikeys import require_scope
from shared.contracts import OutboundEmail
from shared.contracts.base import EmailAddress
from shared.db import in_transaction
from shared.service import ServiceContext
from shared.timeutil import as_utc
from shared.topics import MAIL_OUTBOUND_TRANSACTIONAL

T = TypeVar("T")
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
Url = Annotated[str, Field(max_length=2_000, pattern=r"^https?://[^\s<>\"]+$")]
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
DELIVERY_STATUSES = ("queued", "sending", "handed_over", "sent", "deferred", "failed", "bounced",
                     "complained", "opened", "unsubscribed")  # fmt: skip


class MailingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    target_group_id: Annotated[str, Field(min_length=1, max_length=100)]
    template_id: int
    sender_identity: Annotated[str, Field(max_length=200)] | None = None
    survey_url: Url | None = None
    calendar_url: Url | None = None


class MailingPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    target_group_id: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    template_id: int | None = None
    sender_identity: Annotated[str, Field(max_length=200)] | None = None
    survey_url: Url | None = None
    calendar_url: Url | None = None


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: datetime


class TestSendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: Annotated[list[EmailAddress], Field(min_length=1, max_length=20)]


class MailingOut(BaseModel):
    id: int
    name: str
    target_group_id: str
    template_id: int
    template_version_id: int | None
    sender_identity: str | None
    survey_url: str | None
    calendar_url: str | None
    status: str
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    frozen: bool
    progress: dict[str, int]


def mailing_out(session: Session, mailing: Mailing) -> MailingOut:
    return MailingOut(
        **mailing.model_dump(
            include={
                "id",
                "name",
                "target_group_id",
                "template_id",
                "template_version_id",
                "sender_identity",
                "survey_url",
                "calendar_url",
                "status",
                "scheduled_at",
                "started_at",
                "finished_at",
                "frozen",
            }
        ),
        progress=store.progress(session, mailing.id or 0),
    )


def page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
        "content='width=device-width'><title>" + html.escape(title) + "</title></head><body "
        "style='font-family:sans-serif;max-width:36em;margin:3em auto'>" + body + "</body></html>"
    )


def routers(context: ServiceContext) -> list[APIRouter]:
    api = APIRouter(prefix="/v1/mailings", tags=["mailings"])
    public = APIRouter(tags=["recipients"])
    url = context.database_url
    settings = context.settings
    read = [Depends(require_scope("mailings:read"))]
    write = [Depends(require_scope("mailings:write"))]
    transactional = context.broker.publisher(settings.topic(MAIL_OUTBOUND_TRANSACTIONAL), title="test sends")

    async def act(work: Callable[..., Mailing], *args: object) -> MailingOut:
        def run(session: Session) -> MailingOut:
            mailing = work(session, *args)
            session.flush()
            return mailing_out(session, mailing)

        try:
            return await in_transaction(url, run)
        except lifecycle.Refused as exc:
            raise HTTPException(exc.status, exc.reason) from exc
        except ImportError as exc:
            raise HTTPException(503, "templates are not available") from exc

    @api.post("", dependencies=write, status_code=201, summary="Create a mailing (never sends)")
    async def create(body: MailingIn) -> MailingOut:
        return await act(lifecycle.create, body.model_dump())

    @api.get("", dependencies=read)
    async def list_mailings(
        status: str | None = None, limit: int = Query(100, ge=1, le=1_000)
    ) -> list[MailingOut]:
        def run(session: Session) -> list[MailingOut]:
            query = select(Mailing).order_by(col(Mailing.id).desc()).limit(limit)
            if status:
                query = query.where(Mailing.status == status)
            return [mailing_out(session, m) for m in session.exec(query).all()]

        return await in_transaction(url, run)

    @api.get("/{mailing_id}", dependencies=read)
    async def get(mailing_id: int) -> MailingOut:
        return await act(lifecycle.get, mailing_id)

    @api.patch("/{mailing_id}", dependencies=write, summary="Edit a draft (scheduled mailings are read-only)")
    async def edit(mailing_id: int, body: MailingPatch) -> MailingOut:
        return await act(lifecycle.edit, mailing_id, body.model_dump(exclude_unset=True))

    @api.post("/{mailing_id}/schedule", dependencies=write)
    async def schedule(mailing_id: int, body: ScheduleIn) -> MailingOut:
        return await act(lifecycle.schedule, mailing_id, body.at)

    @api.post("/{mailing_id}/send-now", dependencies=write)
    async def send_now(mailing_id: int) -> MailingOut:
        return await act(lifecycle.schedule, mailing_id, None)

    @api.post("/{mailing_id}/unschedule", dependencies=write)
    async def unschedule(mailing_id: int) -> MailingOut:
        return await act(lifecycle.unschedule, mailing_id)

    @api.post("/{mailing_id}/pause", dependencies=write)
    async def pause(mailing_id: int) -> MailingOut:
        return await act(lifecycle.pause, mailing_id)

    @api.post("/{mailing_id}/resume", dependencies=write)
    async def resume(mailing_id: int) -> MailingOut:
        return await act(lifecycle.resume, mailing_id)

    @api.post("/{mailing_id}/cancel", dependencies=write)
    async def cancel(mailing_id: int) -> MailingOut:
        return await act(lifecycle.cancel, mailing_id)

    @api.get("/{mailing_id}/deliveries", dependencies=read, summary="Per-recipient records (keyset paging)")
    async def deliveries(
        mailing_id: int,
        status: list[str] | None = Query(None),
        undelivered: bool = Query(False, description="only who did not get it"),
        after: int = 0,
        limit: int = Query(500, ge=1, le=5_000),
    ) -> list[dict[str, Any]]:
        def run(session: Session) -> list[dict[str, Any]]:
            query = (
                select(Delivery)
                .where(Delivery.mailing_id == mailing_id, col(Delivery.id) > after)
                .order_by(col(Delivery.id))
                .limit(limit)
            )
            if status:
                query = query.where(col(Delivery.status).in_(status))
            if undelivered:
                query = query.where(
                    col(Delivery.status).in_(("queued", "sending", "deferred", "failed", "bounced"))
                )
            return [
                d.model_dump(mode="json", exclude={"lease_owner", "lease_until"})
                for d in session.exec(query).all()
            ]

        return await in_transaction(url, run)

    @api.post(
        "/{mailing_id}/test-send", dependencies=write, status_code=202, summary="Send a test to addresses"
    )
    async def test_send(mailing_id: int, body: TestSendIn) -> dict[str, Any]:
        def run(session: Session) -> tuple[Mailing, Any]:
            mailing = lifecycle.get(session, mailing_id)
            from services.mass_mailer.templates.store import compiled_version, current_version

            compiled = (
                compiled_version(session, mailing.template_version_id)
                if mailing.template_version_id
                else current_version(session, mailing.template_id)
            )
            if compiled is None:
                raise lifecycle.Refused(422, "the template has no active version")
            return mailing, compiled

        try:
            mailing, compiled = await in_transaction(url, run)
        except lifecycle.Refused as exc:
            raise HTTPException(exc.status, exc.reason) from exc
        ids = []
        for address in body.to:
            sample = {"first_name": "Test", "last_name": "Recipient", "email": address, "custom": {}}
            rendered = compiled.render(
                contact={**sample, "language": None},
                links={
                    "unsubscribe": "#",
                    "online_view": "#",
                    "survey": mailing.survey_url or "#",
                    "calendar": mailing.calendar_url or "#",
                },
            )
            correlation = f"test-{mailing_id}-{uuid.uuid4().hex[:12]}"
            request = OutboundEmail(
                correlation_id=correlation,
                sender_identity=mailing.sender_identity,
                to=[address],
                subject=f"[TEST] {rendered.subject}",
                text=rendered.text,
                html=rendered.html,
                source="mailing-test",
            )
            await transactional.publish(request.model_dump(mode="json"), key=correlation.encode())
            ids.append(correlation)
        return {"status": "queued", "correlation_ids": ids}

    # -- public endpoints (no API key: the token is the credential) ------------------------

    key_holder: list[bytes] = []

    def link_key() -> bytes:
        if not key_holder:
            key_holder.append(links.link_key(settings))
        return key_holder[0]

    def subject_of(token: str) -> links.TokenSubject:
        found = links.read_token(link_key(), token)
        if found is None:
            raise HTTPException(404, "this link is not valid")
        return found

    @public.get("/u/{token}", response_class=HTMLResponse, summary="Unsubscribe confirmation page")
    async def unsubscribe_page(token: str) -> HTMLResponse:
        subject_of(token)
        form = (
            "<h1>Unsubscribe</h1><p>Do you want to stop receiving these emails?</p>"
            f"<form method='post' action='{html.escape(token, quote=True)}'>"
            "<input type='hidden' name='List-Unsubscribe' value='One-Click'>"
            "<button type='submit'>Unsubscribe</button></form>"
        )
        return HTMLResponse(page("Unsubscribe", form))

    @public.post("/u/{token}", response_class=HTMLResponse, summary="One-click unsubscribe (RFC 8058)")
    async def unsubscribe(token: str) -> HTMLResponse:
        found = subject_of(token)
        done = await in_transaction(url, store.unsubscribe, found.mailing_id, found.contact_id)
        context.outbox.wake()
        if not done:
            return HTMLResponse(page("Unsubscribed", "<p>You will not receive further emails.</p>"))
        return HTMLResponse(
            page("Unsubscribed", "<h1>Unsubscribed</h1><p>You will not receive further emails.</p>")
        )

    @public.get("/m/open/{token}.gif", summary="Open-tracking pixel")
    async def pixel(token: str) -> Response:
        if settings.mailing_open_tracking:
            try:
                found = subject_of(token)
            except HTTPException:
                found = None
            if found is not None:
                await in_transaction(url, store.opened, found.mailing_id, found.contact_id)
        return Response(GIF, media_type="image/gif", headers={"Cache-Control": "no-store"})

    @public.get("/m/view/{token}", response_class=HTMLResponse, summary="View the mailing in the browser")
    async def view_online(token: str) -> HTMLResponse:
        found = subject_of(token)

        def run(session: Session) -> str | None:
            mailing = session.get(Mailing, found.mailing_id)
            contact = session.get(Contact, found.contact_id)
            if mailing is None or contact is None or not mailing.template_version_id:
                return None
            from services.mass_mailer.templates.store import compiled_version

            compiled = compiled_version(session, mailing.template_version_id)
            urls = links.recipient_links(settings.mailing_public_url, token)
            survey = ""
            if mailing.survey_url:
                survey = links.recipient_survey_link(
                    link_key(),
                    settings.mailing_public_url,
                    mailing.id or 0,
                    found.contact_id,
                    as_utc(mailing.started_at) if mailing.started_at else None,
                    compiled.survey_valid_days,
                )
            data = contact.model_dump(include={"first_name", "last_name", "email", "language"})
            return compiled.render(
                contact={**data, "custom": dict(contact.custom_fields or {})},
                links={
                    "unsubscribe": urls.unsubscribe,
                    "online_view": urls.online_view,
                    "survey": survey,
                    "calendar": mailing.calendar_url or "",
                },
            ).html

        body = await in_transaction(url, run)
        if body is None:
            raise HTTPException(404, "this mailing is no longer available")
        return HTMLResponse(body)

    @public.get("/m/survey/{token}", summary="Survey link: to the survey while it is valid")
    async def survey(token: str) -> Response:
        found = links.read_survey_token(link_key(), token)
        if found is None:
            raise HTTPException(404, "this link is not valid")
        if found.expired(datetime.now(UTC)):
            closed = found.valid_until.strftime("%Y-%m-%d %H:%M UTC") if found.valid_until else ""
            return HTMLResponse(
                page("Survey closed", f"<h1>This survey has closed</h1><p>It closed on {closed}.</p>"),
                status_code=410,
            )

        def target_of(session: Session) -> str | None:
            mailing = session.get(Mailing, found.mailing_id)
            return mailing.survey_url if mailing is not None else None

        target = await in_transaction(url, target_of)
        if not target:
            raise HTTPException(404, "this survey is no longer available")
        return RedirectResponse(target, status_code=303)

    return [api, public]
