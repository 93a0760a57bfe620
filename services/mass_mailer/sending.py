"""What the transactional gateway and the bulk senders share: resolved sender identities (cached
briefly), one SMTP pool per relay and one DKIM signer per key set."""

from __future__ import annotations

import asyncio
import hashlib
import time

from sqlmodel import Session

from services.mass_mailer import sender_store
from services.mass_mailer.senders import ResolvedSender, resolve
from shared.db import in_transaction
from shared.mail.dkim import DkimSigner
from shared.mail.pool import SmtpPool
from shared.secretbox import SecretBox
from shared.settings import Settings

SENDER_CACHE_S = 30.0


class SendingResources:
    def __init__(self, database_url: str, settings: Settings) -> None:
        self.database_url = database_url
        self.settings = settings
        self.box = SecretBox.from_settings(settings)
        self._senders: dict[str | None, tuple[float, ResolvedSender]] = {}
        self._pools: dict[str, SmtpPool] = {}
        self._signers: dict[tuple[str, ...], DkimSigner] = {}
        self._last_pool: tuple[ResolvedSender, SmtpPool] | None = None

    async def sender(self, ref: str | None) -> ResolvedSender | None:
        """The identity ``ref`` (name or id; None = the default), or None if there is no such one."""
        cached = self._senders.get(ref)
        if cached and time.monotonic() - cached[0] < SENDER_CACHE_S:
            return cached[1]

        def load(session: Session) -> ResolvedSender | None:
            identity = sender_store.identity_by_ref(session, ref)
            if identity is None and ref is not None:
                return None
            domain = identity.dkim_domain if identity else self.settings.default_sender.rsplit("@", 1)[-1]
            return resolve(identity, sender_store.keys_for_domain(session, domain), self.box, self.settings)

        resolved = await in_transaction(self.database_url, load)
        if resolved is not None:
            self._senders[ref] = (time.monotonic(), resolved)
        return resolved

    def pool(self, sender: ResolvedSender) -> SmtpPool:
        last = self._last_pool
        if last is not None and last[0] is sender:  # resolved senders are cached objects
            return last[1]
        pool = self._pool(sender)
        self._last_pool = (sender, pool)
        return pool

    def _pool(self, sender: ResolvedSender) -> SmtpPool:
        # The JSON masks SecretStr values: without the digest, identities that differ only in
        # their relay password or token (or an identity whose password changed) would share a
        # pool logged in with the first one's credentials.
        relay = sender.relay
        secrets = (relay.password, relay.oauth_token)
        credentials = "\0".join(s.get_secret_value() if s else "" for s in secrets)
        digest = hashlib.sha256(credentials.encode()).hexdigest()
        key = f"{relay.model_dump_json()}|{digest}|{sender.pool_size}"
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = SmtpPool(sender.relay, size=sender.pool_size)
        return pool

    def signer(self, sender: ResolvedSender) -> DkimSigner:
        key = tuple(f"{k.domain}|{k.selector}|{k.algorithm}" for k in sender.dkim_keys)
        signer = self._signers.get(key)
        if signer is None:
            signer = self._signers[key] = DkimSigner(sender.dkim_keys)
        return signer

    async def close(self) -> None:
        self._last_pool = None
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)
