"""HTTP API of the mail scanner."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request

from services.mail_scanner import storage
from services.mail_scanner.models import Requester
from services.mail_scanner.parsing import ParsedMail, parse_message
from shared.apikeys import require_scope
from shared.db import in_transaction
from shared.service import ServiceContext

MAX_UPLOAD_BYTES = 25 * 1024 * 1024


def routers(context: ServiceContext) -> list[APIRouter]:
    router = APIRouter(prefix="/v1", tags=["mail scanner"])

    @router.post(
        "/parse",
        dependencies=[Depends(require_scope("scanner:read"))],
        summary="Parse a raw RFC 5322 message (request body: message/rfc822)",
        response_model_by_alias=True,
    )
    async def parse(request: Request) -> ParsedMail:
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_UPLOAD_BYTES:
                raise HTTPException(413, f"message larger than {MAX_UPLOAD_BYTES} bytes")
        return parse_message(bytes(body))

    @router.get("/requesters", dependencies=[Depends(require_scope("scanner:read"))])
    async def find_requester(email: str) -> Requester:
        row = await in_transaction(context.database_url, storage.requester_by_email, email)
        if row is None:
            raise HTTPException(404, "no contact with that address")
        return row

    return [router]
