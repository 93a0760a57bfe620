"""The outbound gateway: every transactional email leaves through here.

Per message: accept once per correlation id, check suppressions, compose, DKIM-sign, hand over
to the relay through a pooled connection, and publish each recipient's status change on
``mail.delivery-events``. 4xx replies are retried later with exponential backoff and jitter
(durably: the row carries ``next_attempt_at``; the sweeper picks it up) until the deadline.

Exactly once towards the relay: the row is marked ``sending`` before the transaction (a row
the Kafka path creates is born so) and ``handed_over`` right before the final dot. After a
crash, ``sending`` rows are sent again (the relay never got the whole message) and
``handed_over`` rows count as sent.

Cost per mail: the Kafka path accepts, claims and reads suppressions and the template in one
transaction shared by a consumer batch (group commit), then sends in the background; the
statements are SQLAlchemy Core (``outbound_store``), the rows plain records.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from services.mass_mailer import delivery_rules as rules
from services.mass_mailer import outbound_store as store
from services.mass_mailer.senders import ResolvedSender
from services.mass_mailer.sending import SendingResources
from services.mass_mailer.templates.compiled import CompiledTemplate
from shared.contracts import DeliveryEvent, DeliveryStatus, OutboundEmail
from shared.db import _turn as sqlite_turn
from shared.db import get_engine, session_scope
from shared.errors import PermanentError, TransientError
from shared.group_commit import TransactionBatcher
from shared.mail.compose import (
    CompositionError,
    MailAddress,
    MailDraft,
    OutgoingAttachment,
    new_message_id,
)
from shared.mail.fastmime import compose_bytes
from shared.mail.smtp import Outcome
from shared.metrics import MAILS_FAILED, MAILS_SENT
from shared.service import ServiceContext

log = logging.getLogger(__name__)
T = TypeVar("T")
EVENT_NAMESPACE = uuid.UUID("6f1d9f4e-8d0b-4a55-9a57-3e2b8c1d7a10")


def draft_from_request(request: OutboundEmail, sender: ResolvedSender, message_id: str) -> MailDraft:
    attachments = []
    for item in request.attachments:
        try:
            content = base64.b64decode(item.content_b64, validate=True)
        except ValueError as exc:
            raise PermanentError(f"attachment {item.filename!r} is not valid base64") from exc
        attachments.append(
            OutgoingAttachment(
                filename=item.filename,
                content=content,
                content_type=item.content_type,
                inline_cid=item.inline_cid,
            )
        )
    return MailDraft(
        sender=sender.sender,
        to=[MailAddress(email=a) for a in request.to],
        cc=[MailAddress(email=a) for a in request.cc],
        reply_to=MailAddress(email=request.reply_to) if request.reply_to else sender.reply_to,
        subject=request.subject,
        text=request.text,
        html=request.html,
        headers=request.headers,
        attachments=attachments,
        message_id=message_id,
        in_reply_to=request.in_reply_to,
        references=request.references,
    )


def event_id(correlation_id: str, recipient: str, status: str, attempt: int) -> uuid.UUID:
    """Deterministic, so a republished event (after a crash) is recognisably the same event."""
    return uuid.uuid5(EVENT_NAMESPACE, f"{correlation_id}|{recipient}|{status}|{attempt}")


class Gateway:
    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.settings = context.settings
        self.owner = f"{socket.gethostname()[:30]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.claims = itertools.count()
        self.sending = SendingResources(context.database_url, context.settings)
        # Concurrent mails' small transactions (claim, sending, finish) commit together. The
        # handed_over marks have their own lane: an SMTP session waits on them before its final
        # dot, so they should not queue behind a consumer batch's claims; and groups stay small,
        # as on SQLite a handed_over mark also waits for the other lane's running transaction.
        self.batcher = TransactionBatcher(context.database_url, max_group=16)
        self.handovers = TransactionBatcher(context.database_url)
        # On SQLite the mark is committed right here on the event loop (a local commit takes
        # about 0.1 ms): the final dot then follows with nothing in between. Through a worker
        # thread, the loop may first run other mails' work for milliseconds, and a crash in that
        # gap loses a mail (it counts as sent). PostgreSQL commits are round trips: a thread.
        self.inline_handover = get_engine(context.database_url).dialect.name == "sqlite"
        # Kafka path: a claimed mail is sent in the background, so the consumer fetches the next
        # batch while SMTP sessions are busy; this bounds how many are claimed and not yet done.
        self.room = asyncio.Semaphore(2 * context.settings.gateway_concurrency)
        self.in_flight: set[asyncio.Task[None]] = set()

    # -- entry points ------------------------------------------------------------------------

    async def handle(self, request: OutboundEmail) -> None:
        """Kafka path: record the request (idempotent), claim it and look up what its attempt
        needs (suppressions, template) in one step, then send it in the background.

        Returning once the claim is committed lets Kafka commit the offset: the row is durable
        and leased, and if this process dies before it is sent, the sweeper takes it over when
        the lease expires (as it would with a crash in the middle of sending)."""
        await self.room.acquire()
        try:
            token = f"{self.owner}:{next(self.claims)}"
            row, lookup = await self.db(self._accept, request, token)
        except BaseException:
            self.room.release()
            raise
        if row is None:
            self.room.release()
            return  # another instance holds it; if that one dies, its lease expires
        task = asyncio.create_task(self._send_claimed(row, request if row.fresh else None, lookup))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _send_claimed(
        self, row: store.Leased, request: OutboundEmail | None, lookup: Lookup | None
    ) -> None:
        try:
            await self._advance_leased(row, request, lookup)
        except Exception:
            log.exception("outbound message %s failed; retried when its lease expires", row.id)
        finally:
            self.room.release()

    def _accept(
        self, session: Session, request: OutboundEmail, token: str
    ) -> tuple[store.Leased | None, Lookup | None]:
        row = store.accept_and_claim(
            session,
            request,
            token,
            deadline_s=self.settings.gateway_retry_deadline_s,
            lease_s=self.settings.gateway_lease_s,
            message_id=request.message_id_header or new_message_id(self.settings.mail_domain),
        )
        if row is None or not self._will_attempt(row):
            return row, None
        # a redelivery: the stored request is the one that counts
        stored = request if row.fresh else OutboundEmail.model_validate_json(row.payload)
        pending = rules.pending_recipients([*stored.to, *stored.cc], row.recipient_status)
        return row, look_up(session, pending, stored.template_id)

    async def sweep_forever(self) -> None:
        """Retries that are due, events not yet published, rows of instances that died."""
        limit = asyncio.Semaphore(self.settings.gateway_concurrency)

        async def one(row_id: int) -> None:
            async with limit:
                try:
                    await self.process(row_id)
                except Exception:
                    log.exception("sweeper: outbound message %s failed; will retry", row_id)

        while True:
            try:
                ids = await self.db(store.due)
                await asyncio.gather(*(one(i) for i in ids))
            except Exception:
                log.exception("sweeper pass failed")
            await asyncio.sleep(self.settings.gateway_sweep_interval_s)

    async def close(self, drain_s: float = 10.0) -> None:
        """Let mails being sent finish (for up to ``drain_s``), then close the SMTP pools."""
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=drain_s)
        await self.sending.close()

    # -- one row -----------------------------------------------------------------------------

    async def process(self, row_id: int) -> None:
        token = f"{self.owner}:{next(self.claims)}"
        row = await self.db(store.claim, row_id, token, self.settings.gateway_lease_s)
        if row is None:
            return  # another instance holds it; if that one dies, its lease expires
        await self._advance_leased(row)

    async def _advance_leased(
        self, row: store.Leased, request: OutboundEmail | None = None, lookup: Lookup | None = None
    ) -> None:
        try:
            await self._advance(row, request, lookup)
        except store.LeaseLost:
            log.warning("lost the lease on outbound message %s; leaving it", row.id)

    @staticmethod
    def _will_attempt(row: store.Leased) -> bool:
        """What ``_advance`` decides: does this row get an SMTP attempt now?"""
        if row.status == "handed_over" or row.status in store.FINAL:
            return False
        return not (row.status in ("queued", "deferred") and row.next_attempt_at > store.now())

    async def _advance(
        self, row: store.Leased, request: OutboundEmail | None = None, lookup: Lookup | None = None
    ) -> None:
        if row.status == "handed_over":
            log.warning("%s was handed to the relay before a crash: counting it as sent", row.correlation_id)
            pending = rules.pending_recipients(self._recipients(row), row.recipient_status)
            changes = {
                r: ["sent", "assumed delivered: handed over before the gateway stopped"] for r in pending
            }
            await self.finish(row, changes)
            return
        if row.status in store.FINAL:
            # events_pending: a row finished by an older version that published events itself
            await self.finish(row, row.recipient_status if row.events_pending else {})
            return
        if row.status in ("queued", "deferred") and row.next_attempt_at > store.now():
            await self.release(row)  # a redelivered request whose retry is not due yet
            return
        await self.attempt(row, request, lookup)

    async def attempt(
        self, row: store.Leased, request: OutboundEmail | None = None, lookup: Lookup | None = None
    ) -> None:
        """``request``: the row's request if already parsed; ``lookup``: its suppressions and
        template if already read (in the claiming transaction)."""
        if request is None:
            request = OutboundEmail.model_validate_json(row.payload)
        # A row created by this claim is born "sending" (first attempt, Message-ID chosen): one
        # status write less. Until the mail goes out, work with the row as it was before that,
        # and put it back if it ends without an SMTP attempt.
        marked_id = row.message_id_header if row.fresh and row.status == "sending" else None
        unsent: dict[str, object] = {}
        if marked_id is not None:
            row.attempts, row.message_id_header = 0, None
            unsent = {"attempts": 0, "message_id_header": None}
        pending = rules.pending_recipients([*request.to, *request.cc], row.recipient_status)
        if lookup is None:
            lookup = await self.db(look_up, pending, request.template_id)
        suppressed = lookup.suppressed
        changes = {r: ["failed", f"suppressed: {why}"] for r, why in suppressed.items()}
        if suppressed:
            MAILS_FAILED.labels(self.context.name, "suppressed").inc(len(suppressed))
        pending = [r for r in pending if r not in suppressed]
        if not pending:
            await self.finish(row, changes, last_error="no deliverable recipient left", **unsent)
            return

        if request.template_id is not None:
            try:
                request = self.render_template(request, lookup.template)
            except PermanentError as exc:
                failed = {r: ["failed", str(exc)] for r in pending}
                await self.finish(row, {**changes, **failed}, last_error=str(exc), **unsent)
                return
        sender = await self.sending.sender(request.sender_identity)
        if sender is None:
            reason = f"unknown sender identity {request.sender_identity!r}"
            failed = {r: ["failed", reason] for r in pending}
            await self.finish(row, {**changes, **failed}, last_error=reason, **unsent)
            return
        message_id = (
            marked_id
            or row.message_id_header
            or request.message_id_header
            or new_message_id(self.settings.mail_domain)
        )
        try:
            raw = compose_bytes(draft_from_request(request, sender, message_id), self.settings.mail_domain)
        except (CompositionError, PermanentError) as exc:
            MAILS_FAILED.labels(self.context.name, "invalid").inc()
            failed = {r: ["failed", str(exc)] for r in pending}
            await self.finish(row, {**changes, **failed}, last_error=str(exc), **unsent)
            return
        if sender.dkim_keys:
            raw = self.sending.signer(sender).sign(raw)

        attempt = row.attempts + 1
        if marked_id is None:
            await self.db(
                store.transition,
                row.id,
                row.lease_owner,
                status="sending",
                attempts=attempt,
                message_id_header=message_id,
            )
        row.attempts, row.message_id_header = attempt, message_id

        async def handed_over() -> None:
            if self.inline_handover:
                self.mark_handed_over_now(row.id, row.lease_owner)
            else:
                await self.handovers.run(store.transition, row.id, row.lease_owner, status="handed_over")

        result = await self.sending.pool(sender).send(
            raw, sender.envelope_from, pending, on_handover=handed_over
        )
        step = rules.after_send(
            result,
            pending,
            row.recipient_status,
            attempt=attempt,
            now=store.now(),
            deadline=row.deadline_at,
            retry_base_s=self.settings.gateway_retry_base_s,
            retry_max_s=self.settings.gateway_retry_max_s,
        )
        kind = {"sent": None, "deferred": "temporary", "failed": "permanent"}[step.status]
        if result.outcome is Outcome.SENT:
            MAILS_SENT.labels(self.context.name).inc()
        elif kind:
            MAILS_FAILED.labels(self.context.name, kind).inc()
        extra: dict[str, object] = {
            "smtp_code": result.code,
            "enhanced_code": result.enhanced_code,
            "last_error": next((why for state, why in step.changes.values() if state != "sent"), None),
        }
        if step.retry_at is not None:
            extra["next_attempt_at"] = step.retry_at
        await self.finish(row, {**changes, **step.changes}, **extra)

    async def finish(self, row: store.Leased, changes: dict[str, list[str]], **values: object) -> None:
        """Store the recipients' new statuses, queue one delivery event per changed recipient in
        the outbox and give up the lease: one transaction, so no status change loses its event."""
        recipient_status = {**row.recipient_status, **changes}
        status = rules.row_status(recipient_status)
        row.status, row.recipient_status = status, recipient_status
        for field, value in values.items():
            setattr(row, field, value)
        await self.db(
            store.finish,
            row.id,
            row.lease_owner,
            self.delivery_events(row, changes),
            status=status,
            recipient_status=recipient_status,
            **values,
        )
        if changes:
            self.context.outbox.wake()

    @staticmethod
    def delivery_events(row: store.Leased, changes: dict[str, list[str]]) -> list[DeliveryEvent]:
        """Event ids are deterministic, so a repeat after a crash is recognisably the same event."""
        events = []
        for recipient, (status, reason) in changes.items():
            attempt = row.attempts if status == "deferred" else 0
            events.append(
                DeliveryEvent(
                    message_id=event_id(row.correlation_id, recipient, status, attempt),
                    correlation_id=row.correlation_id,
                    recipient=recipient,
                    status=DeliveryStatus(status),
                    source="gateway",
                    smtp_code=row.smtp_code,
                    enhanced_code=row.enhanced_code,
                    reason=reason or None,
                    message_id_header=row.message_id_header,
                    attempt=max(row.attempts, 1),
                )
            )
        return events

    async def release(self, row: store.Leased, **values: object) -> None:
        await self.db(store.transition, row.id, row.lease_owner, lease_owner=None, lease_until=None, **values)

    # -- helpers -----------------------------------------------------------------------------

    def mark_handed_over_now(self, row_id: int, token: str | None) -> None:
        """The ``handed_over`` mark, committed synchronously (SQLite: see ``inline_handover``).
        The in-process writer turn is taken as ``in_transaction`` does: no SQLITE_BUSY sleeps."""
        url = self.context.database_url
        try:
            with sqlite_turn(url), session_scope(url) as session:
                store.transition(session, row_id, token or "", status="handed_over")
        except OperationalError as exc:
            raise TransientError(f"database unavailable: {type(exc.orig).__name__}") from exc

    @staticmethod
    def _recipients(row: store.Leased) -> list[str]:
        return [r for r in row.recipients.split(",") if r]

    async def db(self, work: Callable[..., T], *args: object, **kwargs: object) -> T:
        return await self.batcher.run(work, *args, **kwargs)

    @staticmethod
    def render_template(request: OutboundEmail, compiled: CompiledTemplate | None) -> OutboundEmail:
        """Fill subject/html/text from the template's current version (``compiled``, looked up
        by ``look_up``) and the merge data."""
        template_id = request.template_id or ""
        if not template_id.isdigit():
            raise PermanentError(f"template id {template_id!r} is not a number")
        if compiled is None:
            raise PermanentError(f"template {template_id} does not exist or is not active")
        data = dict(request.merge_data)
        contact, links = data.pop("contact", {}), data.pop("links", {})
        if not isinstance(contact, dict) or not isinstance(links, dict):
            raise PermanentError("merge_data.contact and merge_data.links must be objects")
        try:
            rendered = compiled.render(contact=contact, links=links, extra=data)
        except Exception as exc:  # a template error must fail this mail, not the consumer
            raise PermanentError(f"template {template_id} failed to render: {exc}") from exc
        return request.model_copy(
            update={
                "subject": request.subject or rendered.subject,
                "html": rendered.html,
                "text": rendered.text,
                "sender_identity": request.sender_identity or compiled.sender_identity,
            }
        )


@dataclass(frozen=True, slots=True)
class Lookup:
    """What an attempt reads from the database besides its row."""

    suppressed: dict[str, str]  # recipient -> why it must not be mailed
    template: CompiledTemplate | None  # the current version of the request's template, if any


def look_up(session: Session, pending: list[str], template_id: str | None) -> Lookup:
    compiled = None
    if template_id is not None and template_id.isdigit():
        compiled = store.current_template(session, int(template_id))
    return Lookup(store.suppressed(session, pending), compiled)
