"""One IMAP account, scanned by one worker thread: connect, import new mail, wait (IDLE or poll).

Each account has its own thread and connection, so a broken server or token only ever stalls
its own account; failures are recorded on the account (state ``error`` + last error) and
retried with backoff. IMAP calls block, which is why this is a thread and not a coroutine.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from sqlalchemy import delete, select
from sqlmodel import col

from services.mail_scanner import accounts, oauth, parsepool
from services.mail_scanner.intake import Engine, FetchedMail, LeaseLost, checkpoint, import_batch, renew_lease
from services.mail_scanner.models import PendingAction, ScannerAccount
from shared.db import session_scope
from shared.metrics import IMAP_ERRORS
from shared.secretbox import SecretBox

log = logging.getLogger(__name__)
SEEN = b"\\Seen"
PIPELINE_DEPTH = 2  # batches fetched and being parsed ahead of the one being imported
DELETED = b"\\Deleted"


def connect(account: ScannerAccount, secret: str, timeout_s: float) -> IMAPClient:
    """Open and authenticate; ``secret`` is the password or the OAuth2 access token."""
    context = ssl.create_default_context()
    if not account.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    client = IMAPClient(
        account.host,
        port=account.port,
        ssl=account.encryption == "ssl",
        ssl_context=context if account.encryption == "ssl" else None,
        timeout=timeout_s,
    )
    try:
        if account.encryption == "starttls":
            client.starttls(context)
        if account.auth_type == "oauth2":
            client.oauth2_login(account.username, secret)
        else:
            client.login(account.username, secret)
    except BaseException:
        _quietly(client.logout)
        raise
    return client


def list_folders(account: ScannerAccount, secret: str, timeout_s: float) -> list[str]:
    client = connect(account, secret, timeout_s)
    try:
        return sorted(name for _flags, _delim, name in client.list_folders())
    finally:
        _quietly(client.logout)


def _quietly(call: Callable[[], Any]) -> None:
    with contextlib.suppress(Exception):
        call()


def _buffered(client: IMAPClient) -> bool:
    """Whether a server line already waits in a buffer, where polling the socket (as
    idle_check does) never sees it: imaplib reads through a buffered file, so an EXISTS sent
    together with IDLE's "+" continuation can sit there (and TLS keeps decrypted bytes of its
    own). Missing it stalls the account until the next line arrives."""
    sock = client.socket()
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    file = getattr(client._imap, "file", None)
    if file is None:
        return False
    sock.setblocking(False)
    try:
        return bool(file.peek(1))
    except (OSError, ValueError):
        return False
    finally:
        sock.setblocking(True)
        client._set_read_timeout()


def _announces_mail(response: Any) -> bool:
    return isinstance(response, tuple) and len(response) > 1 and response[1] in (b"EXISTS", b"RECENT")


def describe(exc: BaseException) -> str:
    """An error text for the API: the exception type and message, never a credential."""
    text = str(exc).replace("\r", " ").replace("\n", " ")[:500]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class AccountWorker(threading.Thread):
    def __init__(
        self,
        account_id: int,
        token: str,
        engine: Engine,
        database_url: str,
        box: SecretBox,
        on_events: Callable[[], None],
    ) -> None:
        super().__init__(name=f"imap-account-{account_id}", daemon=True)
        self.account_id = account_id
        self.token = token
        self.engine = engine
        self.settings = engine.settings
        self.database_url = database_url
        self.box = box
        self.on_events = on_events
        self.stopping = threading.Event()
        self.lease_lost = False
        self._access: oauth.AccessToken | None = None
        self._renewed = 0.0
        self._uidnext: dict[str, int] = {}

    def stop(self) -> None:
        self.stopping.set()

    # --- database helpers (each its own short transaction) ---

    def _db(self, work: Callable[..., Any], *args: Any) -> Any:
        with session_scope(self.database_url) as session:
            return work(session, *args)

    def _account(self) -> ScannerAccount | None:
        return self._db(lambda s: s.get(ScannerAccount, self.account_id))

    def _state(self, state: str, error: str | None = None) -> None:
        self._db(accounts.set_state, self.account_id, self.token, state, error)

    def _renew(self, force: bool = False) -> None:
        if force or time.monotonic() - self._renewed > self.settings.scanner_lease_s / 3:
            self._db(renew_lease, self.account_id, self.token, self.settings.scanner_lease_s)
            self._renewed = time.monotonic()

    def _secret(self, account: ScannerAccount) -> str:
        if account.auth_type != "oauth2":
            return accounts.decrypt(self.box, account.password_enc) or ""
        if self._access is None or not self._access.fresh():
            fresh = oauth.refresh(
                account.oauth_token_url or "",
                account.oauth_client_id or "",
                accounts.decrypt(self.box, account.oauth_client_secret_enc),
                accounts.decrypt(self.box, account.oauth_refresh_token_enc) or "",
                account.oauth_scope,
                self.settings.scanner_imap_timeout_s,
            )
            if fresh.refresh_token:
                self._db(accounts.store_rotated_refresh_token, self.box, self.account_id, fresh.refresh_token)
            self._access = fresh
        return self._access.access_token

    # --- the loop ---

    def run(self) -> None:
        backoff = 1.0
        while not self.stopping.is_set():
            client: IMAPClient | None = None
            account: ScannerAccount | None = None
            try:
                account = self._account()
                if account is None or not account.active:
                    return
                self._renew(force=True)
                client = connect(account, self._secret(account), self.settings.scanner_imap_timeout_s)
                backoff = 1.0
                self._session(client, account)
            except LeaseLost:
                self.lease_lost = True
                return
            except Exception as exc:
                log.warning("account %s: %s", self.account_id, describe(exc))
                IMAP_ERRORS.labels(account=str(self.account_id)).inc()
                try:
                    self._state("error", describe(exc))
                except Exception:
                    log.exception("account %s: cannot record the error state", self.account_id)
                try:
                    changed = self._back_off(backoff, account.updated_at if account else None)
                except LeaseLost:
                    self.lease_lost = True
                    return
                backoff = 1.0 if changed else min(backoff * 2, 60.0)
            finally:
                if client is not None:
                    _quietly(client.logout)

    def _back_off(self, seconds: float, version: object) -> bool:
        """Wait ``seconds`` after a failure, keeping the lease; True (at once) when the account
        was changed meanwhile (a password fixed through the API is tried within a second, not
        after up to a minute of backoff)."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            self.stopping.wait(min(1.0, left))
            try:
                current = self._account()
                if current is None or current.updated_at != version:
                    return True
                self._renew()
            except LeaseLost:
                raise
            except Exception:  # noqa: S112 - the database may be what failed: keep waiting
                continue
        return False

    def _session(self, client: IMAPClient, account: ScannerAccount) -> None:
        can_idle = client.has_capability("IDLE")
        version = account.updated_at
        while not self.stopping.is_set():
            self._apply_pending(client)
            for folder in account.folders:
                self._sync(client, account, folder)
            self._apply_pending(client)
            current = self._account()
            if current is None or not current.active or current.updated_at != version:
                return  # deactivated or reconfigured: reconnect with the new settings
            if can_idle:
                self._state("idle")
                self._idle(client, account.folders[0], len(account.folders) > 1)
            else:
                self._state("polling")
                self._wait(self.settings.scanner_poll_interval_s)

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set() and time.monotonic() < deadline:
            self._renew()
            self.stopping.wait(min(1.0, max(0.0, deadline - time.monotonic())))

    def _version(self) -> tuple[bool, Any] | None:
        account = self._account()
        return None if account is None else (account.active, account.updated_at)

    def _idle(self, client: IMAPClient, folder: str, others: bool) -> None:
        info = client.select_folder(folder)
        if int(info.get(b"UIDNEXT", 0)) > self._uidnext.get(folder, 0):
            return  # mail arrived since the last sync, before IDLE could report it
        # SELECT's own EXISTS count is no news: without this, IDLE ends at once (a busy loop that
        # never renews the lease while idle)
        getattr(client._imap, "untagged_responses", {}).pop("EXISTS", None)
        limit = self.settings.scanner_idle_renew_s
        if others:
            limit = min(limit, self.settings.scanner_poll_interval_s)
        version, checked = self._version(), self._renewed
        client.idle()
        started = time.monotonic()
        try:
            # an EXISTS that came in while IDLE was being set up lands in imaplib's buffer
            if getattr(client._imap, "untagged_responses", {}).pop("EXISTS", None):
                return
            while not self.stopping.is_set() and time.monotonic() - started < limit:
                self._renew()
                if self._renewed != checked:  # with each lease renewal: changed via the API?
                    checked = self._renewed
                    if self._version() != version:
                        return
                if _buffered(client):
                    return  # idle_done() reads it; the next sync looks
                waited = time.monotonic()
                responses = client.idle_check(timeout=1.0)
                if any(_announces_mail(r) for r in responses):
                    return
                if not responses and time.monotonic() - waited < 0.9:
                    return  # readable but no line: the server hung up (idle_done raises: reconnect)
        finally:
            client.idle_done()

    def _sync(self, client: IMAPClient, account: ScannerAccount, folder: str) -> None:
        """Import the folder's new mail, batch by batch, as a pipeline: while the database
        imports batch n, the parse workers parse the next batches, fetched before."""
        info = client.select_folder(folder)
        uidvalidity = int(info[b"UIDVALIDITY"])
        self._uidnext[folder] = int(info.get(b"UIDNEXT", 0))
        last = self._db(checkpoint, self.account_id, folder, uidvalidity)
        criteria: list[Any] = ["UID", f"{last + 1}:*"]
        if account.scan_mode == "unread":
            criteria.append("UNSEEN")
        uids = sorted(u for u in client.search(criteria) if u > last)
        batch = self.settings.scanner_batch_size
        waiting: collections.deque[tuple[list[FetchedMail], parsepool.Parsing]] = collections.deque()
        for start in range(0, len(uids), batch):
            if self.stopping.is_set():
                return
            mails = self._fetch(client, uids[start : start + batch])
            if mails:
                raws = [
                    m.raw
                    for m in mails
                    if m.raw is not None and m.size <= self.settings.scanner_max_message_bytes
                ]
                waiting.append((mails, parsepool.Parsing(raws, self.engine.prefix)))  # type: ignore[arg-type]
            if len(waiting) > PIPELINE_DEPTH:
                self._import(client, folder, uidvalidity, *waiting.popleft())
        while waiting and not self.stopping.is_set():
            self._import(client, folder, uidvalidity, *waiting.popleft())

    def _fetch(self, client: IMAPClient, chunk: list[int]) -> list[FetchedMail]:
        sizes = client.fetch(chunk, ["RFC822.SIZE"])
        small = [
            u
            for u in chunk
            if u in sizes and sizes[u][b"RFC822.SIZE"] <= self.settings.scanner_max_message_bytes
        ]
        bodies = client.fetch(small, ["BODY.PEEK[]"]) if small else {}
        return [
            FetchedMail(uid=u, size=int(sizes[u][b"RFC822.SIZE"]), raw=bodies.get(u, {}).get(b"BODY[]"))
            for u in chunk
            if u in sizes and (u in bodies or u not in small)
        ]

    def _import(
        self,
        client: IMAPClient,
        folder: str,
        uidvalidity: int,
        mails: list[FetchedMail],
        parsing: parsepool.Parsing,
    ) -> None:
        parsed = iter(parsing.result())
        for item in mails:
            if item.raw is not None and item.size <= self.settings.scanner_max_message_bytes:
                item.facts = next(parsed)  # None: parsed (and a failure recorded) in the import
        args = (self.engine, self.account_id, self.token, folder, uidvalidity, mails)
        try:
            result = self._db(import_batch, *args)
        except LeaseLost:
            raise
        except Exception:
            log.warning("account %s: batch import failed; retrying mail by mail", self.account_id)
            result = self._db(functools.partial(import_batch, careful=True), *args)
        self._renewed = time.monotonic()
        if result.events:
            self.on_events()
        self._apply_pending(client, (folder, uidvalidity))

    def _apply_pending(self, client: IMAPClient, selected: tuple[str, int] | None = None) -> None:
        """Do the mailbox changes the imports decided; ``selected``: the folder that is selected
        and its UIDVALIDITY, which needs no new SELECT (and stays selected)."""
        table = PendingAction.__table__  # plain rows: no ORM objects for a batch's worth of flags
        rows: list[Any] = self._db(
            lambda s: list(
                s.execute(
                    select(table).where(table.c.account_id == self.account_id).order_by(table.c.id)
                ).all()
            )
        )
        if not rows:
            return
        groups: dict[tuple[str, int], list[Any]] = {}
        for row in rows:
            groups.setdefault((row.folder, row.uidvalidity), []).append(row)
        done: list[int] = []
        elsewhere = False
        for (folder, uidvalidity), actions in groups.items():
            if (folder, uidvalidity) == selected:
                self._perform(client, actions)
                done.extend(a.id for a in actions if a.id is not None)
                continue
            elsewhere = True
            try:
                info = client.select_folder(folder)
            except IMAPClientError:
                done.extend(a.id for a in actions if a.id is not None)  # the folder is gone
                continue
            if int(info[b"UIDVALIDITY"]) == uidvalidity:
                self._perform(client, actions)
            done.extend(a.id for a in actions if a.id is not None)
        self._db(lambda s: s.execute(delete(PendingAction).where(col(PendingAction.id).in_(done))))
        if elsewhere and selected is not None:
            client.select_folder(selected[0])

    def _perform(self, client: IMAPClient, actions: list[Any]) -> None:
        seen = [a.uid for a in actions if a.action == "seen"]
        if seen:
            client.add_flags(seen, [SEEN], silent=True)
        targets: dict[str, list[int]] = {}
        for action in actions:
            if action.action == "move" and action.target:
                targets.setdefault(action.target, []).append(action.uid)
        for target, uids in targets.items():
            if not client.folder_exists(target):
                try:
                    client.create_folder(target)
                except IMAPClientError:
                    pass  # created meanwhile
            if client.has_capability("MOVE"):
                client.move(uids, target)
            else:
                client.copy(uids, target)
                client.delete_messages(uids)
                client.uid_expunge(uids)
        deleted = [a.uid for a in actions if a.action == "delete"]
        if deleted:
            client.delete_messages(deleted)
            client.uid_expunge(deleted)
