"""HTTP API of the mass mailer."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from services.mass_mailer.models import Contact, OutboundMessage
from shared.apikeys import require_scope
from shared.contracts import OutboundEmail
from shared.db import in_transaction
from shared.service import ServiceContext
from shared.topics import MAIL_OUTBOUND_TRANSACTIONAL


def routers(context: ServiceContext) -> list[APIRouter]:
    router = APIRouter(prefix="/v1", tags=["mass mailer"])
    outbound = context.broker.publisher(
        context.settings.topic(MAIL_OUTBOUND_TRANSACTIONAL), title="transactional mail requests"
    )

    @router.get("/contacts/{contact_id}", dependencies=[Depends(require_scope("contacts:read"))])
    async def get_contact(contact_id: str) -> Contact:
        contact = await in_transaction(context.database_url, lambda s: s.get(Contact, contact_id))
        if contact is None:
            raise HTTPException(404, "no such contact")
        return contact

    @router.post(
        "/transactional",
        status_code=202,
        dependencies=[Depends(require_scope("mail:send"))],
        summary="Queue one email for the outbound gateway",
    )
    async def queue_transactional(request: OutboundEmail) -> dict[str, str]:
        await outbound.publish(request.model_dump(mode="json"), key=request.correlation_id.encode())
        return {"status": "queued", "correlation_id": request.correlation_id}

    @router.get("/transactional/{correlation_id}", dependencies=[Depends(require_scope("mail:read"))])
    async def transactional_status(correlation_id: str) -> OutboundMessage:
        from sqlmodel import select

        row = await in_transaction(
            context.database_url,
            lambda s: s.exec(
                select(OutboundMessage).where(OutboundMessage.correlation_id == correlation_id)
            ).first(),
        )
        if row is None:
            raise HTTPException(404, "unknown correlation id")
        return row

    return [router]
