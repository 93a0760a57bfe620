"""HTTP API of the mail scanner: parsing, accounts, rules, error mails, tickets and replies."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from services.mail_scanner import accounts, fetcher, intake, storage, tickets
from services.mail_scanner.blobs import get_blob
from services.mail_scanner.models import (
    ErrorMail,
    Requester,
    ScannerAccount,
    ScannerRule,
    Ticket,
    TicketComment,
)
from services.mail_scanner.parsing import ParsedMail, parse_message
from services.mail_scanner.rules import RuleIn
from services.mail_scanner.runtime import scanner_for
from shared.apikeys import require_scope
from shared.db import in_transaction
from shared.service import ServiceContext

MAX_UPLOAD_BYTES = 25 * 1024 * 1024
READ = [Depends(require_scope("scanner:read"))]
WRITE = [Depends(require_scope("scanner:write"))]
TICKETS_READ = [Depends(require_scope("tickets:read"))]
TICKETS_WRITE = [Depends(require_scope("tickets:write"))]


class RuleOut(RuleIn):
    id: int
    position: int


class TicketPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["open", "pending", "closed"] | None = None
    priority: Annotated[str, Field(max_length=50)] | None = None
    category: Annotated[str, Field(max_length=200)] | None = None
    assigned_group: Annotated[str, Field(max_length=200)] | None = None


class ReplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, Field(min_length=1, max_length=200_000)]
    html: Annotated[str, Field(max_length=1_000_000)] | None = None
    author_email: Annotated[str, Field(max_length=320)] = ""
    author_name: Annotated[str, Field(max_length=500)] = ""
    status: Literal["open", "pending", "closed"] | None = None


class ReplyOut(BaseModel):
    comment_id: int
    message_id: str
    correlation_id: str
    to: list[str]
    cc: list[str]
    subject: str


class TicketOut(BaseModel):
    id: int
    number: str
    subject: str
    status: str
    priority: str | None
    category: str | None
    assigned_group: str | None
    requester_email: str
    requester_name: str
    requester_contact_id: str | None
    cc: list[str]
    note: str | None
    account_id: int | None
    created_at: datetime
    updated_at: datetime
    comments: list[dict[str, Any]] | None = None

    @classmethod
    def of(cls, row: Ticket, comments: list[TicketComment] | None = None) -> TicketOut:
        data = row.model_dump(include=set(cls.model_fields) - {"comments"})
        data["number"] = row.number or ""
        out = cls(**data)
        if comments is not None:
            out.comments = [c.model_dump(exclude={"message_key"}) for c in comments]
        return out


async def _body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"message larger than {MAX_UPLOAD_BYTES} bytes")
    return bytes(body)


def _account(session: Session, account_id: int) -> ScannerAccount:
    row = session.get(ScannerAccount, account_id)
    if row is None:
        raise HTTPException(404, "no such scanner account")
    return row


def _ticket(session: Session, number: str) -> Ticket:
    row = session.exec(select(Ticket).where(Ticket.number == number)).first()
    if row is None:
        raise HTTPException(404, "no such ticket")
    return row


def routers(context: ServiceContext) -> list[APIRouter]:
    router = APIRouter(prefix="/v1", tags=["mail scanner"])
    url = context.database_url
    scanner = scanner_for(context)

    @router.post(
        "/parse",
        dependencies=READ,
        summary="Parse a raw RFC 5322 message (request body: message/rfc822)",
        response_model_by_alias=True,
    )
    async def parse(request: Request) -> ParsedMail:
        return parse_message(await _body(request))

    @router.get("/requesters", dependencies=READ)
    async def find_requester(email: str) -> Requester:
        row = await in_transaction(url, storage.requester_by_email, email)
        if row is None:
            raise HTTPException(404, "no contact with that address")
        return row

    # --- accounts ---

    @router.post("/accounts", dependencies=WRITE, status_code=201, summary="Add a scanner account (inactive)")
    async def create_account(data: accounts.AccountIn) -> accounts.AccountOut:
        def work(session: Session) -> accounts.AccountOut:
            return accounts.AccountOut.of(accounts.create(session, scanner.box, data))

        try:
            return await in_transaction(url, work)
        except IntegrityError:
            raise HTTPException(409, "an account with that name exists") from None

    @router.get("/accounts", dependencies=READ)
    async def list_accounts() -> list[accounts.AccountOut]:
        def work(session: Session) -> list[accounts.AccountOut]:
            rows = session.exec(select(ScannerAccount).order_by(col(ScannerAccount.id))).all()
            return [accounts.AccountOut.of(r) for r in rows]

        return await in_transaction(url, work)

    @router.get(
        "/accounts/{account_id}", dependencies=READ, summary="An account with its state and last error"
    )
    async def get_account(account_id: int) -> accounts.AccountOut:
        return await in_transaction(url, lambda s: accounts.AccountOut.of(_account(s, account_id)))

    @router.patch("/accounts/{account_id}", dependencies=WRITE, summary="Change or (de)activate an account")
    async def patch_account(account_id: int, data: accounts.AccountPatch) -> accounts.AccountOut:
        def work(session: Session) -> accounts.AccountOut:
            return accounts.AccountOut.of(
                accounts.patch(session, scanner.box, _account(session, account_id), data)
            )

        try:
            return await in_transaction(url, work)
        except IntegrityError:
            raise HTTPException(409, "an account with that name exists") from None

    @router.delete("/accounts/{account_id}", dependencies=WRITE, status_code=204)
    async def delete_account(account_id: int) -> Response:
        def work(session: Session) -> None:
            row = _account(session, account_id)
            for rule in session.exec(select(ScannerRule).where(ScannerRule.account_id == account_id)).all():
                session.delete(rule)
            session.delete(row)

        await in_transaction(url, work)
        return Response(status_code=204)

    @router.get("/accounts/{account_id}/folders", dependencies=READ, summary="Folders on the IMAP server")
    async def folders(account_id: int) -> list[str]:
        row = await in_transaction(url, _account, account_id)
        worker = fetcher.AccountWorker(account_id, "", await scanner.engine(), url, scanner.box, lambda: None)
        try:
            return await asyncio.to_thread(
                lambda: fetcher.list_folders(
                    row, worker._secret(row), context.settings.scanner_imap_timeout_s
                )
            )
        except Exception as exc:
            raise HTTPException(502, f"IMAP server: {fetcher.describe(exc)}") from None

    @router.get("/accounts/{account_id}/errors", dependencies=READ, summary="Mails moved to the error folder")
    async def error_mails(
        account_id: int, limit: Annotated[int, Field(ge=1, le=1000)] = 100
    ) -> list[ErrorMail]:
        def work(session: Session) -> list[ErrorMail]:
            _account(session, account_id)
            query = select(ErrorMail).where(ErrorMail.account_id == account_id)
            return list(session.exec(query.order_by(col(ErrorMail.id).desc()).limit(limit)).all())

        return await in_transaction(url, work)

    # --- rules ---

    def _rules(session: Session, account_id: int) -> list[RuleOut]:
        rows = session.exec(
            select(ScannerRule)
            .where(ScannerRule.account_id == account_id)
            .order_by(col(ScannerRule.position))
        ).all()
        return [RuleOut.model_validate(r.model_dump(exclude={"account_id"})) for r in rows]

    @router.get("/accounts/{account_id}/rules", dependencies=READ)
    async def get_rules(account_id: int) -> list[RuleOut]:
        return await in_transaction(url, lambda s: (_account(s, account_id), _rules(s, account_id))[1])

    @router.put("/accounts/{account_id}/rules", dependencies=WRITE, summary="Replace the ordered rule list")
    async def put_rules(
        account_id: int, rules: Annotated[list[RuleIn], Field(max_length=200)]
    ) -> list[RuleOut]:
        def work(session: Session) -> list[RuleOut]:
            _account(session, account_id)
            for row in session.exec(select(ScannerRule).where(ScannerRule.account_id == account_id)).all():
                session.delete(row)
            session.flush()
            for position, rule in enumerate(rules):
                session.add(
                    ScannerRule(account_id=account_id, position=position, **rule.model_dump(mode="json"))
                )
            session.flush()
            return _rules(session, account_id)

        return await in_transaction(url, work)

    @router.post(
        "/accounts/{account_id}/rules/dry-run",
        dependencies=READ,
        summary="Run the rules on an uploaded .eml (body) or a stored mail (?comment_id= or ?error_id=)",
    )
    async def dry_run(
        account_id: int, request: Request, comment_id: int | None = None, error_id: int | None = None
    ) -> dict[str, Any]:
        engine = await scanner.engine()
        upload = b"" if comment_id or error_id else await _body(request)

        def work(session: Session) -> dict[str, Any]:
            account = _account(session, account_id)
            raw = upload
            digest = None
            if comment_id is not None:
                comment = session.get(TicketComment, comment_id)
                digest = comment.raw_sha256 if comment else None
            elif error_id is not None:
                error = session.get(ErrorMail, error_id)
                digest = error.raw_sha256 if error else None
            if comment_id is not None or error_id is not None:
                blob = get_blob(session, digest) if digest else None
                if blob is None:
                    raise HTTPException(404, "no stored mail with that id")
                raw = blob.content
            if not raw.strip():
                raise HTTPException(422, "send the .eml as the request body, or give comment_id / error_id")
            return intake.dry_run(session, engine, account, raw)

        return await in_transaction(url, work)

    # --- tickets ---

    @router.get("/tickets", dependencies=TICKETS_READ)
    async def list_tickets(
        status: str | None = None,
        requester: str | None = None,
        limit: Annotated[int, Field(ge=1, le=1000)] = 100,
        offset: Annotated[int, Field(ge=0)] = 0,
    ) -> list[TicketOut]:
        def work(session: Session) -> list[TicketOut]:
            query = select(Ticket)
            if status:
                query = query.where(Ticket.status == status)
            if requester:
                query = query.where(Ticket.requester_email == requester.lower())
            rows = session.exec(query.order_by(col(Ticket.id)).offset(offset).limit(limit)).all()
            return [TicketOut.of(r) for r in rows]

        return await in_transaction(url, work)

    @router.get("/tickets/{number}", dependencies=TICKETS_READ, summary="A ticket with its comments")
    async def get_ticket(number: str) -> TicketOut:
        def work(session: Session) -> TicketOut:
            row = _ticket(session, number)
            comments = session.exec(
                select(TicketComment).where(TicketComment.ticket_id == row.id).order_by(col(TicketComment.id))
            ).all()
            return TicketOut.of(row, list(comments))

        return await in_transaction(url, work)

    @router.patch("/tickets/{number}", dependencies=TICKETS_WRITE)
    async def patch_ticket(number: str, data: TicketPatch) -> TicketOut:
        def work(session: Session) -> TicketOut:
            row = _ticket(session, number)
            for name, value in data.model_dump(exclude_unset=True, exclude={"status"}).items():
                setattr(row, name, value)
            session.add(row)
            if data.status:
                tickets.set_status(session, row, data.status)
            return TicketOut.of(row)

        result = await in_transaction(url, work)
        context.outbox.wake()
        return result

    @router.post(
        "/tickets/{number}/replies",
        dependencies=TICKETS_WRITE,
        status_code=201,
        summary="An agent's reply: stored as a comment and emailed to the requester and the CCs",
    )
    async def reply(number: str, data: ReplyIn) -> ReplyOut:
        engine = await scanner.engine()

        def work(session: Session) -> ReplyOut:
            row = _ticket(session, number)
            try:
                comment, email = tickets.agent_reply(
                    session,
                    engine,
                    row,
                    text=data.text,
                    html=data.html,
                    author_email=data.author_email,
                    author_name=data.author_name,
                    status=data.status,
                )
            except ValueError as exc:
                raise HTTPException(422, f"cannot email this ticket: {exc}") from None
            return ReplyOut(
                comment_id=comment.id or 0,
                message_id=email.message_id_header or "",
                correlation_id=email.correlation_id,
                to=list(email.to),
                cc=list(email.cc),
                subject=email.subject,
            )

        result = await in_transaction(url, work)
        context.outbox.wake()
        return result

    @router.get(
        "/blobs/{sha256}", dependencies=TICKETS_READ, summary="An attachment or stored mail by sha256"
    )
    async def blob(sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]) -> Response:
        row = await in_transaction(url, get_blob, sha256)
        if row is None:
            raise HTTPException(404, "no such content")
        return Response(row.content, media_type="application/octet-stream")

    return [router]
