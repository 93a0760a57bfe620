"""Bulk sender: consumes recipient batches, renders, composes, signs and sends each recipient.

Per batch: claim the queued deliveries (a conditional UPDATE, so a batch that arrives twice is
sent once), then for each recipient: check the mailing is still sending (pause/cancel take effect
within ``STATUS_TTL_S``), wait for the relay's and the recipient domain's token buckets, render
from the precompiled template (merge tags and link tokens only), compose with List-Unsubscribe
(RFC 8058) and a VERP Return-Path, DKIM-sign, send over the pooled connection. The delivery is
marked ``handed_over`` (group commit) before the final dot; results are written in bulk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlmodel import Session, select

from services.mass_mailer.mailings import links, store
from services.mass_mailer.mailings.models import Mailing, RateState
from services.mass_mailer.mailings.ratelimit import RateLimiter
from services.mass_mailer.mailings.writer import DeliveryWriter
from services.mass_mailer.senders import ResolvedSender
from services.mass_mailer.sending import SendingResources
from shared.contracts import BulkBatch
from shared.db import in_transaction
from shared.mail import fastmime
from shared.mail.compose import CompositionError, MailAddress
from shared.mail.smtp import Outcome, SendResult
from shared.metrics import MAILS_FAILED, MAILS_SENT
from shared.settings import Settings
from shared.timeutil import as_utc

log = logging.getLogger(__name__)
T = TypeVar("T")
STATUS_TTL_S = 0.25
RATE_PERSIST_S = 5.0
_HEADER_SAFE = re.compile(r"[\x21-\x2b\x2d-\x3b\x3d\x3f-\x7e]*")  # printable ASCII without space , < >


@dataclass
class MailingView:
    status: str
    sender_identity: str | None
    survey_url: str | None
    calendar_url: str | None
    loaded: float
    started_at: datetime | None = None


def pixel_tag(url: str) -> str:
    return (
        f'<img src="{url}" width="1" height="1" alt="" style="display:block;border:0;height:1px;width:1px">'
    )


def with_pixel(html: str, url: str) -> str:
    """The pixel just before the last ``</body>`` (any case), else at the end."""
    tag = pixel_tag(url)
    # The closing tag sits near the end: search the tail before lowercasing the whole 20 KB.
    tail = max(0, len(html) - 1024)
    at = html[tail:].lower().rfind("</body>")
    at = at + tail if at >= 0 else html.lower().rfind("</body>")
    return html[:at] + tag + html[at:] if at >= 0 else html + tag


def list_unsubscribe(https_url: str, mailto: str, token: str) -> bytes:
    """RFC 2369/8058 header lines, folded between the two URIs and never RFC 2047-encoded (the
    stdlib encodes long unstructured values, which receivers then cannot parse)."""
    value = f"<{https_url}>,\r\n <mailto:{mailto}?subject=unsubscribe%20{token}>"
    if not _HEADER_SAFE.fullmatch(https_url + mailto + token):
        raise ValueError("unsubscribe URL or mailto address contains characters not allowed in a header")
    return (
        f"List-Unsubscribe: {value}\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        "Precedence: bulk\r\n"
    ).encode("ascii")


class BulkSender:
    def __init__(self, database_url: str, settings: Settings) -> None:
        self.database_url = database_url
        self.settings = settings
        self.owner = f"{socket.gethostname()[:30]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.key = links.link_key(settings)
        self.mail_domain = settings.mail_domain
        self.bounce_domain = settings.mailing_bounce_domain or settings.mail_domain
        self.mailto = settings.mailing_unsubscribe_mailto or f"unsubscribe@{settings.mail_domain}"
        self.sending = SendingResources(database_url, settings)
        self.writer = DeliveryWriter(database_url, settings.mailing_lease_s)
        self.limiter = RateLimiter(settings.mailing_relay_rate_per_s, settings.mailing_domain_rate_per_s)
        self.saved_rates: dict[str, float] | None = None
        self.inflight = asyncio.Semaphore(settings.mailing_sender_concurrency)
        self.mailings: dict[int, MailingView] = {}
        self._loading: dict[int, asyncio.Future[MailingView | None]] = {}
        self.templates: dict[int, Any] = {}
        self.active: set[int] = set()  # claimed and not finished: their lease is renewed

    async def db(self, work: Callable[..., T], *args: object, **kwargs: object) -> T:
        return await in_transaction(self.database_url, work, *args, **kwargs)

    # -- the batch ---------------------------------------------------------------------------

    async def handle(self, batch: BulkBatch) -> None:
        view = await self.mailing(batch.mailing_id, fresh=True)
        if view is None or view.status != "sending":
            return  # paused or cancelled: resume publishes the queued rows again
        if self.saved_rates is None:
            self.saved_rates = await self.db(
                lambda s: {r.key: r.rate_per_s for r in s.exec(select(RateState)).all()}
            )
        ids = [r.delivery_id for r in batch.recipients]
        claimed = await self.db(store.claim, batch.mailing_id, ids, self.owner, self.settings.mailing_lease_s)
        if not claimed:
            return
        self.active.update(c.delivery_id for c in claimed)
        template = await self.template(batch.template_version_id)
        sender = await self.sending.sender(view.sender_identity or getattr(template, "sender_identity", None))
        await asyncio.gather(*(self.one(batch.mailing_id, template, sender, c) for c in claimed))

    async def one(
        self, mailing_id: int, template: Any, sender: ResolvedSender | None, claimed: store.Claimed
    ) -> None:
        try:
            await self._one(mailing_id, template, sender, claimed)
        finally:
            self.active.discard(claimed.delivery_id)

    async def _one(
        self, mailing_id: int, template: Any, sender: ResolvedSender | None, claimed: store.Claimed
    ) -> None:
        async with self.inflight:
            view = await self.mailing(mailing_id)
            if view is None or view.status != "sending":
                await self.writer.release(claimed.delivery_id, self.owner)
                return
            attempt = claimed.attempts + 1
            if claimed.suppressed:
                await self.finish(claimed, "failed", attempt, f"not sent: {claimed.suppressed}")
                return
            if sender is None or template is None:
                why = "unknown sender identity" if sender is None else "template version not found"
                await self.finish(claimed, "failed", attempt, f"not sent: {why}")
                return
            try:
                raw, message_id = self.build(mailing_id, template, sender, claimed, view)
            except (CompositionError, ValueError) as exc:
                MAILS_FAILED.labels("mass_mailer", "invalid").inc()
                await self.finish(claimed, "failed", attempt, f"not sent: {str(exc)[:300]}")
                return
            domain_key = "domain:" + claimed.email.rsplit("@", 1)[-1].lower()
            relay_key = "relay:" + sender.relay.address
            await self.wait_for_tokens([relay_key, domain_key])
            result = await self.sending.pool(sender).send(
                raw,
                links.verp_address(self.key, mailing_id, claimed.delivery_id, self.bounce_domain),
                [claimed.email],
                on_handover=lambda: self.writer.handed_over(claimed.delivery_id),
            )
            await self.outcome(claimed, attempt, result, message_id, relay_key, domain_key)

    def build(
        self,
        mailing_id: int,
        template: Any,
        sender: ResolvedSender,
        claimed: store.Claimed,
        view: MailingView,
    ) -> tuple[bytes, str]:
        token = links.make_token(self.key, mailing_id, claimed.contact_id)
        urls = links.recipient_links(self.settings.mailing_public_url, token)
        survey = ""
        if view.survey_url:
            survey = links.recipient_survey_link(
                self.key,
                self.settings.mailing_public_url,
                mailing_id,
                claimed.contact_id,
                view.started_at,
                template.survey_valid_days,
            )
        rendered = template.render(
            contact=claimed.contact,
            links={
                "unsubscribe": urls.unsubscribe,
                "online_view": urls.online_view,
                "survey": survey,
                "calendar": view.calendar_url or "",
            },
        )
        html = with_pixel(rendered.html, urls.pixel) if self.settings.mailing_open_tracking else rendered.html
        message_id = f"<bulk.{mailing_id}.{claimed.delivery_id}@{self.mail_domain}>"
        name = " ".join(p for p in (claimed.contact.get("first_name"), claimed.contact.get("last_name")) if p)
        raw = fastmime.build(
            sender=sender.sender,
            to=MailAddress(email=claimed.email, name=name),
            reply_to=sender.reply_to,
            subject=rendered.subject,
            text=rendered.text,
            html=html,
            message_id=message_id,
            date=datetime.now(UTC),
            extra_headers=list_unsubscribe(urls.unsubscribe, self.mailto, token),
        )
        if sender.dkim_keys:
            raw = self.sending.signer(sender).sign(raw)
        return raw, message_id

    async def wait_for_tokens(self, keys: list[str]) -> None:
        for key in keys:
            self.limiter.bucket(key, time.monotonic(), self.saved_rates)
        while (delay := self.limiter.delay(keys, time.monotonic())) > 0:
            await asyncio.sleep(delay)

    async def outcome(
        self,
        claimed: store.Claimed,
        attempt: int,
        result: SendResult,
        message_id: str,
        relay_key: str,
        domain_key: str,
    ) -> None:
        reply = result.detail[:1_000] if result.detail else None
        # Only a 2xx reply to the final dot counts as sent. A connection lost (or timed out) after the
        # dot without a reply is retried: the relay may have dropped the message (a reset mid-DATA
        # often surfaces only after the dot was written), and a duplicate beats a silent loss.
        if result.outcome is Outcome.SENT:
            MAILS_SENT.labels("mass_mailer").inc()
            now = time.monotonic()
            self.limiter.buckets[domain_key].succeeded(now)
            self.limiter.buckets[relay_key].succeeded(now)
            await self.finish(claimed, "sent", attempt, reply or "250", message_id=message_id, sent=True)
        elif result.outcome is Outcome.PERMANENT:
            MAILS_FAILED.labels("mass_mailer", "permanent").inc()
            await self.finish(claimed, "failed", attempt, reply, message_id=message_id)
        else:
            MAILS_FAILED.labels("mass_mailer", "temporary").inc()
            self.limiter.buckets[domain_key if result.code else relay_key].throttled(time.monotonic())
            if attempt >= self.settings.mailing_max_attempts:
                await self.finish(claimed, "failed", attempt, f"gave up after {attempt} attempts: {reply}")
                return
            retry = store.retry_at(
                attempt, self.settings.mailing_retry_base_s, self.settings.mailing_retry_max_s
            )
            await self.finish(
                claimed, "deferred", attempt, reply, message_id=message_id, next_attempt_at=retry
            )

    async def finish(
        self,
        claimed: store.Claimed,
        status: str,
        attempt: int,
        reply: str | None,
        *,
        message_id: str | None = None,
        sent: bool = False,
        next_attempt_at: Any = None,
    ) -> None:
        moment = store.now()
        values: dict[str, Any] = {
            "id": claimed.delivery_id,
            "status": status,
            "attempts": attempt,
            "last_reply": reply[:1_000] if reply else None,
            "lease_owner": None,
            "lease_until": None,
            "next_attempt_at": next_attempt_at,
            "updated_at": moment,
        }
        if message_id:
            values["message_id_header"] = message_id
        if sent:
            values["sent_at"] = moment
        await self.writer.result(values)

    # -- caches ------------------------------------------------------------------------------

    async def mailing(self, mailing_id: int, *, fresh: bool = False) -> MailingView | None:
        view = self.mailings.get(mailing_id)
        if view is not None and not fresh and time.monotonic() - view.loaded < STATUS_TTL_S:
            return view

        def load(session: Session) -> MailingView | None:
            row = session.get(Mailing, mailing_id)
            if row is None:
                return None
            return MailingView(
                row.status,
                row.sender_identity,
                row.survey_url,
                row.calendar_url,
                time.monotonic(),
                as_utc(row.started_at) if row.started_at else None,
            )

        # One load at a time per mailing: when the cached status expires, the ~100 sends in
        # flight all ask at once, and one query answers them all.
        loading = self._loading.get(mailing_id)
        if loading is None:
            loading = self._loading[mailing_id] = asyncio.ensure_future(self.db(load))
            loading.add_done_callback(lambda done: self._loaded(mailing_id, done))
        return await asyncio.shield(loading)

    def _loaded(self, mailing_id: int, done: asyncio.Future[MailingView | None]) -> None:
        self._loading.pop(mailing_id, None)
        if done.cancelled() or done.exception() is not None:  # the waiters see the error
            return
        view = done.result()
        if view is not None:
            self.mailings[mailing_id] = view

    async def template(self, version_id: int) -> Any:
        found = self.templates.get(version_id)
        if found is None:
            from services.mass_mailer.templates.store import compiled_version

            try:
                found = await self.db(compiled_version, version_id)
            except KeyError:
                return None
            self.templates[version_id] = found
        return found

    # -- lifecycle ---------------------------------------------------------------------------

    async def persist_rates_forever(self) -> None:
        while True:
            await asyncio.sleep(RATE_PERSIST_S)
            snapshot = self.limiter.snapshot()
            if not snapshot:
                continue
            try:
                await self.db(save_rates, snapshot)
            except Exception:
                log.exception("could not persist send rates")

    async def renew_leases_forever(self) -> None:
        """Keep the lease on claimed rows that wait (rate limits) so no sweep requeues them."""
        while True:
            await asyncio.sleep(self.settings.mailing_lease_s / 3)
            if self.active:
                try:
                    await self.db(store.renew, list(self.active), self.owner, self.settings.mailing_lease_s)
                except Exception:
                    log.exception("could not renew delivery leases")

    async def close(self) -> None:
        await self.sending.close()


def save_rates(session: Session, rates: dict[str, float]) -> None:
    for key, rate in rates.items():
        row = session.get(RateState, key[:300]) or RateState(key=key[:300], rate_per_s=rate)
        row.rate_per_s = rate
        row.updated_at = store.now()
        session.add(row)
