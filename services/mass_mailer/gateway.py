"""The outbound gateway: every transactional email leaves through here.

Per message: idempotency by correlation id, suppression check, compose, SMTP hand-over, and a
delivery event per recipient on ``mail.delivery-events``.
"""

from __future__ import annotations

import base64
import logging

from services.mass_mailer import storage
from services.mass_mailer.contacts import is_suppressed
from shared.contracts import DeliveryEvent, DeliveryStatus, OutboundEmail
from shared.db import in_transaction
from shared.errors import PermanentError, TransientError
from shared.mail.compose import CompositionError, MailAddress, MailDraft, OutgoingAttachment, compose
from shared.mail.smtp import Outcome, RelayConfig, send_once
from shared.metrics import MAILS_FAILED, MAILS_SENT
from shared.service import ServiceContext
from shared.topics import MAIL_DELIVERY_EVENTS

log = logging.getLogger(__name__)
FINAL_STATES = frozenset({"sent", "failed"})


def draft_from_request(request: OutboundEmail, default_sender: str) -> MailDraft:
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
        sender=MailAddress(email=default_sender),
        to=[MailAddress(email=a) for a in request.to],
        cc=[MailAddress(email=a) for a in request.cc],
        reply_to=MailAddress(email=request.reply_to) if request.reply_to else None,
        subject=request.subject,
        text=request.text,
        html=request.html,
        headers=request.headers,
        attachments=attachments,
    )


class Gateway:
    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.relay = RelayConfig.from_settings(context.settings)
        self.events = context.broker.publisher(
            context.settings.topic(MAIL_DELIVERY_EVENTS), title="delivery events"
        )

    async def publish(
        self, request: OutboundEmail, recipients: list[str], status: DeliveryStatus, **details: object
    ) -> None:
        for recipient in recipients:
            event = DeliveryEvent(
                correlation_id=request.correlation_id,
                recipient=recipient,
                status=status,
                **details,  # type: ignore[arg-type]
            )
            await self.events.publish(event.model_dump(mode="json"), key=request.correlation_id.encode())

    async def record(self, correlation_id: str, status: str, **details: object) -> None:
        await in_transaction(
            self.context.database_url, storage.record_attempt, correlation_id, status, **details
        )

    async def handle(self, request: OutboundEmail) -> None:
        recipients = [*request.to, *request.cc]
        row = await in_transaction(
            self.context.database_url,
            storage.claim_outbound,
            request.correlation_id,
            recipients,
            request.subject,
        )
        if row.status in FINAL_STATES:
            log.info("correlation id %s already %s: not sending again", request.correlation_id, row.status)
            return

        known = await in_transaction(self.context.database_url, storage.contacts_by_email, recipients)
        suppressed = {r: why for r in recipients if (why := is_suppressed(known.get(r.lower())))}
        for recipient, why in suppressed.items():
            await self.publish(request, [recipient], DeliveryStatus.FAILED, reason=f"suppressed: {why}")
        deliverable = [r for r in recipients if r not in suppressed]
        if not deliverable:
            await self.record(request.correlation_id, "failed", error="suppressed")
            MAILS_FAILED.labels(self.context.name, "suppressed").inc()
            return
        to = [r for r in request.to if r not in suppressed]
        cc = [r for r in request.cc if r not in suppressed]
        request = request.model_copy(update={"to": to or cc[:1], "cc": cc if to else cc[1:]})

        try:
            draft = draft_from_request(request, self.context.settings.default_sender)
            message = compose(draft, self.context.settings.mail_domain)
        except CompositionError as exc:
            await self.record(request.correlation_id, "failed", error=str(exc))
            await self.publish(request, deliverable, DeliveryStatus.FAILED, reason=str(exc))
            MAILS_FAILED.labels(self.context.name, "invalid").inc()
            return

        message_id = str(message["Message-ID"])
        sender = self.context.settings.default_sender
        result = await send_once(self.relay, message.as_bytes(), sender, deliverable)
        smtp = {"smtp_code": result.code, "enhanced_code": result.enhanced_code}
        if result.outcome is Outcome.SENT:
            await self.record(
                request.correlation_id, "sent", smtp_code=result.code, message_id_header=message_id
            )
            accepted = [r for r in deliverable if r not in result.refused]
            await self.publish(request, accepted, DeliveryStatus.SENT, message_id_header=message_id, **smtp)
            refused = [r for r in deliverable if r in result.refused]
            await self.publish(request, refused, DeliveryStatus.FAILED, reason="refused by relay", **smtp)
            MAILS_SENT.labels(self.context.name).inc()
            return
        reason = result.detail[:2_000]
        if result.outcome is Outcome.PERMANENT:
            await self.record(request.correlation_id, "failed", smtp_code=result.code, error=reason)
            await self.publish(request, deliverable, DeliveryStatus.FAILED, reason=reason, **smtp)
            MAILS_FAILED.labels(self.context.name, "permanent").inc()
            return
        await self.record(request.correlation_id, "deferred", smtp_code=result.code, error=reason)
        await self.publish(request, deliverable, DeliveryStatus.DEFERRED, reason=reason, **smtp)
        MAILS_FAILED.labels(self.context.name, "temporary").inc()
        raise TransientError(f"relay deferred: {reason}")
