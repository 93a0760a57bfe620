"""HTTP API of the event triggers service.

Events and registrations posted here go to the same Kafka topics the CRM uses, so there is one
code path; triggers, GDPR settings and reads are served from the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from services.event_triggers import storage
from services.event_triggers.certificate import CertificateError, check_template
from services.event_triggers.dispatcher import Dispatcher
from services.event_triggers.ics import EventInfo, build_ics, calendar_link, token_valid
from services.event_triggers.models import DeliveryRecord, MassEvent, Registration, Trigger
from services.event_triggers.rules import CORRELATION_PREFIX, trigger_prefix
from services.event_triggers.schedule import gdpr_deletion_at, valid_zone
from services.event_triggers.specs import (
    GdprSettings,
    GdprState,
    MassEventOut,
    RegistrationOut,
    SendOut,
    TriggerOut,
    TriggerSpec,
)
from shared.apikeys import require_scope
from shared.contracts import MassEventChanged, OutboundEmail, RegistrationChanged
from shared.db import in_transaction
from shared.service import ServiceContext
from shared.topics import CRM_MASS_EVENTS, CRM_REGISTRATIONS, MAIL_OUTBOUND_TRANSACTIONAL

T = TypeVar("T")
READ = [Depends(require_scope("events:read"))]
WRITE = [Depends(require_scope("events:write"))]


def routers(context: ServiceContext, dispatcher: Dispatcher) -> list[APIRouter]:
    router = APIRouter(prefix="/v1", tags=["event triggers"])
    public = APIRouter(tags=["calendar"])
    settings = context.settings
    events_topic = context.broker.publisher(settings.topic(CRM_MASS_EVENTS))
    registrations_topic = context.broker.publisher(settings.topic(CRM_REGISTRATIONS))
    outbound = context.broker.publisher(settings.topic(MAIL_OUTBOUND_TRANSACTIONAL))

    async def db(work: Callable[..., T], *args: object) -> T:
        try:
            return await in_transaction(context.database_url, work, *args)
        except storage.Problem as problem:
            raise HTTPException(problem.status, problem.detail) from problem

    async def event_out(event: MassEvent) -> MassEventOut:
        secret = await dispatcher.link_secret()
        return MassEventOut(
            **event.model_dump(include=set(MassEventOut.model_fields) - {"gdpr", "calendar_link"}),
            gdpr=GdprState(
                delete_after_days=event.gdpr_delete_after_days,
                deletion_at=gdpr_deletion_at(event.end, event.gdpr_delete_after_days, event.gdpr_cancelled),
                cancelled=event.gdpr_cancelled,
                done_at=event.gdpr_done_at,
            ),
            calendar_link=calendar_link(settings.event_triggers_public_url, secret, event.event_id),
        )

    # -- events and registrations ---------------------------------------------------------------

    @router.post(
        "/mass-events",
        status_code=202,
        dependencies=WRITE,
        summary="Announce a mass event change (same path as crm.mass-events)",
    )
    async def post_mass_event(message: MassEventChanged) -> dict[str, str]:
        if not valid_zone(message.time_zone):
            raise HTTPException(422, f"unknown time zone {message.time_zone!r}")
        if message.end < message.start:
            raise HTTPException(422, "the event ends before it starts")
        await events_topic.publish(message.model_dump(mode="json"), key=message.event_id.encode())
        return {"status": "accepted", "event_id": message.event_id}

    @router.get("/mass-events/{event_id}", dependencies=READ)
    async def get_mass_event(event_id: str) -> MassEventOut:
        event = await db(storage.get_event, event_id)
        if event is None:
            raise HTTPException(404, "no such event")
        return await event_out(event)

    @router.post(
        "/registrations",
        status_code=202,
        dependencies=WRITE,
        summary="Announce a registration change (same path as crm.registrations)",
    )
    async def post_registration(message: RegistrationChanged) -> dict[str, str]:
        await registrations_topic.publish(
            message.model_dump(mode="json"), key=message.registration_id.encode()
        )
        return {"status": "accepted", "registration_id": message.registration_id}

    async def registration_out(registration: Registration) -> RegistrationOut:
        event = await db(storage.get_event, registration.event_id)
        deletion = None
        if event is not None and event.gdpr_done_at is None and registration.answers_deleted_at is None:
            deletion = gdpr_deletion_at(event.end, event.gdpr_delete_after_days, event.gdpr_cancelled)
        return RegistrationOut(
            **registration.model_dump(exclude={"answers", "contact", "updated_at", "created_at"}),
            form_answers=registration.answers,
            gdpr_deletion_at=deletion,
        )

    @router.get("/registrations/{registration_id}", dependencies=READ)
    async def get_registration(registration_id: str) -> RegistrationOut:
        registration = await db(storage.get_registration, registration_id)
        if registration is None:
            raise HTTPException(404, "no such registration")
        return await registration_out(registration)

    @router.delete(
        "/registrations/{registration_id}/form-answers",
        dependencies=WRITE,
        summary="GDPR: delete this registration's form answers now (keeps 'answered')",
    )
    async def delete_form_answers(registration_id: str) -> RegistrationOut:
        registration = await db(storage.delete_answers, registration_id, dispatcher.clock.now())
        context.outbox.wake()
        return await registration_out(registration)

    # -- GDPR -----------------------------------------------------------------------------------

    @router.put(
        "/mass-events/{event_id}/gdpr",
        dependencies=WRITE,
        summary="GDPR: delete form answers automatically N days after the event ends",
    )
    async def set_gdpr(event_id: str, body: GdprSettings) -> MassEventOut:
        event = await db(storage.set_gdpr, event_id, body.delete_after_days)
        dispatcher.wake()
        return await event_out(event)

    @router.delete(
        "/mass-events/{event_id}/gdpr",
        dependencies=WRITE,
        summary="GDPR: cancel the automatic deletion (before it ran)",
    )
    async def cancel_gdpr(event_id: str) -> MassEventOut:
        return await event_out(await db(storage.cancel_gdpr, event_id))

    # -- triggers -------------------------------------------------------------------------------

    def check_spec(spec: TriggerSpec) -> None:
        if spec.certificate_template is not None:
            try:
                check_template(spec.certificate_template)
            except CertificateError as exc:
                raise HTTPException(422, str(exc)) from exc

    def trigger_out(trigger: Trigger) -> TriggerOut:
        return TriggerOut.model_validate(trigger.model_dump())

    @router.post("/mass-events/{event_id}/triggers", status_code=201, dependencies=WRITE)
    async def create_trigger(event_id: str, spec: TriggerSpec) -> TriggerOut:
        check_spec(spec)
        trigger = await db(storage.save_trigger, event_id, spec, dispatcher.clock.now())
        dispatcher.wake()
        return trigger_out(trigger)

    @router.get("/mass-events/{event_id}/triggers", dependencies=READ)
    async def list_triggers(event_id: str) -> list[TriggerOut]:
        return [trigger_out(t) for t in await db(storage.list_triggers, event_id)]

    async def load_trigger(trigger_id: int) -> Trigger:
        trigger = await db(storage.get_trigger, trigger_id)
        if trigger is None:
            raise HTTPException(404, "no such trigger")
        return trigger

    @router.get("/triggers/{trigger_id}", dependencies=READ)
    async def get_trigger(trigger_id: int) -> TriggerOut:
        return trigger_out(await load_trigger(trigger_id))

    @router.put(
        "/triggers/{trigger_id}",
        dependencies=WRITE,
        summary="Replace a trigger (active=false cancels its pending sends)",
    )
    async def update_trigger(trigger_id: int, spec: TriggerSpec) -> TriggerOut:
        check_spec(spec)
        current = await load_trigger(trigger_id)
        if spec.action != current.action:
            raise HTTPException(422, "the action of a trigger cannot change; create a new trigger")
        now = dispatcher.clock.now()
        trigger = await db(lambda s: storage.save_trigger(s, current.event_id, spec, now, trigger_id))
        dispatcher.wake()
        return trigger_out(trigger)

    @router.get(
        "/triggers/{trigger_id}/sends",
        dependencies=READ,
        summary="The trigger's sends: due time, status, reason",
    )
    async def trigger_sends(
        trigger_id: int,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[SendOut]:
        await load_trigger(trigger_id)
        rows = await db(lambda s: storage.sends_of(s, trigger_id, limit, offset))
        return [SendOut.model_validate(r.model_dump()) for r in rows]

    @router.get(
        "/triggers/{trigger_id}/stats",
        dependencies=READ,
        summary="Counts: sends per state, and mails per latest delivery status",
    )
    async def trigger_stats(trigger_id: int) -> dict[str, dict[str, int]]:
        await load_trigger(trigger_id)
        return await db(storage.trigger_stats, trigger_id)

    @router.get(
        "/triggers/{trigger_id}/deliveries",
        dependencies=READ,
        summary="Delivery results of this trigger's mails",
    )
    async def trigger_deliveries(trigger_id: int) -> list[DeliveryRecord]:
        await load_trigger(trigger_id)
        return await db(storage.deliveries_for, trigger_prefix(trigger_id))

    # -- test mail and raw deliveries (kept for integrations) -----------------------------------

    @router.post(
        "/test-mail",
        status_code=202,
        dependencies=[Depends(require_scope("mail:send"))],
        summary="Send one mail through the gateway; track it here",
    )
    async def send_test_mail(request: OutboundEmail) -> dict[str, str]:
        if not request.correlation_id.startswith(CORRELATION_PREFIX):
            request = request.model_copy(
                update={"correlation_id": f"{CORRELATION_PREFIX}{request.correlation_id}"}
            )
        request = request.model_copy(update={"source": "event_triggers"})
        await outbound.publish(request.model_dump(mode="json"), key=request.correlation_id.encode())
        return {"status": "queued", "correlation_id": request.correlation_id}

    @router.get("/deliveries", dependencies=READ)
    async def list_deliveries(correlation_id: str) -> list[DeliveryRecord]:
        return await db(storage.deliveries_for, correlation_id)

    # -- add to calendar (public, signed link) -------------------------------------------------

    @public.get(
        "/calendar/{event_id}.ics",
        summary="The event as .ics, for the signed link in mails",
        response_class=Response,
    )
    async def event_calendar(event_id: str, token: Annotated[str, Query(max_length=100)]) -> Response:
        if not token_valid(await dispatcher.link_secret(), event_id, token):
            raise HTTPException(404, "no such calendar")
        event = await db(storage.get_event, event_id)
        if event is None:
            raise HTTPException(404, "no such calendar")
        info = EventInfo(
            event_id=event.event_id,
            name=event.name,
            start=event.start,
            end=event.end,
            time_zone=event.time_zone,
            location=event.location,
            sequence=event.sequence,
            cancelled=event.cancelled,
        )
        body = build_ics(
            info,
            method="PUBLISH",
            domain=settings.mail_domain,
            organizer=settings.default_sender,
            stamp=event.updated_at,
        )
        return Response(
            body,
            media_type="text/calendar; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="event.ics"'},
        )

    return [router, public]
