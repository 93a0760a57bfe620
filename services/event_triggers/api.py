"""HTTP API of the event triggers service."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from services.event_triggers import storage
from services.event_triggers.handlers import CORRELATION_PREFIX
from services.event_triggers.models import DeliveryRecord, MassEvent
from shared.apikeys import require_scope
from shared.contracts import MassEventChanged, OutboundEmail
from shared.db import in_transaction
from shared.service import ServiceContext
from shared.topics import CRM_MASS_EVENTS, MAIL_OUTBOUND_TRANSACTIONAL


def routers(context: ServiceContext) -> list[APIRouter]:
    router = APIRouter(prefix="/v1", tags=["event triggers"])
    events_topic = context.broker.publisher(context.settings.topic(CRM_MASS_EVENTS))
    outbound = context.broker.publisher(context.settings.topic(MAIL_OUTBOUND_TRANSACTIONAL))

    @router.post(
        "/mass-events",
        status_code=202,
        dependencies=[Depends(require_scope("events:write"))],
        summary="Announce a mass event change (same path as crm.mass-events)",
    )
    async def post_mass_event(message: MassEventChanged) -> dict[str, str]:
        await events_topic.publish(message.model_dump(mode="json"), key=message.event_id.encode())
        return {"status": "accepted", "event_id": message.event_id}

    @router.get("/mass-events/{event_id}", dependencies=[Depends(require_scope("events:read"))])
    async def get_mass_event(event_id: str) -> MassEvent:
        event = await in_transaction(context.database_url, lambda s: s.get(MassEvent, event_id))
        if event is None:
            raise HTTPException(404, "no such event")
        return event

    @router.post(
        "/test-mail",
        status_code=202,
        dependencies=[Depends(require_scope("mail:send"))],
        summary="Send one mail through the outbound gateway and track its delivery here",
    )
    async def send_test_mail(request: OutboundEmail) -> dict[str, str]:
        if not request.correlation_id.startswith(CORRELATION_PREFIX):
            request = request.model_copy(
                update={"correlation_id": f"{CORRELATION_PREFIX}{request.correlation_id}"}
            )
        request = request.model_copy(update={"source": "event_triggers"})
        await outbound.publish(request.model_dump(mode="json"), key=request.correlation_id.encode())
        return {"status": "queued", "correlation_id": request.correlation_id}

    @router.get("/deliveries", dependencies=[Depends(require_scope("events:read"))])
    async def list_deliveries(correlation_id: str) -> list[DeliveryRecord]:
        return await in_transaction(context.database_url, storage.deliveries_for, correlation_id)

    return [router]
