"""Import fetched mail into tickets, exactly once.

One database transaction per fetched batch does everything: it re-checks that this instance
still holds the account's lease (a fence against a stalled instance), skips UIDs at or below the
folder checkpoint and mails whose fingerprint was already handled, creates tickets/comments,
enqueues the events in the outbox, records the mailbox changes still to be made (\\Seen, move,
delete) and advances the checkpoint. A crash before the commit leaves no trace; after it,
nothing is imported twice. Each mail runs in a savepoint, so one bad mail goes to the error
folder instead of failing the batch.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, update
from sqlmodel import Session, col, select

from services.mail_scanner import threads, tickets
from services.mail_scanner.batch import Batch, CommentRef, current
from services.mail_scanner.blobs import store_blob
from services.mail_scanner.facts import MailFacts, fingerprint, parse, parse_for_import
from services.mail_scanner.models import (
    ErrorMail,
    FolderCheckpoint,
    PendingAction,
    ScannerAccount,
    ScannerRule,
)
from services.mail_scanner.rules import Decision, RuleIn, decide
from shared.contracts.mail import DeliveryEvent, DeliveryStatus
from shared.outbox import enqueue
from shared.settings import Settings
from shared.topics import MAIL_DELIVERY_EVENTS

log = logging.getLogger(__name__)
EVENT_NAMESPACE = uuid.UUID("6f1c7a52-3f0e-4c55-9f43-8d8f4d1b2a10")


class LeaseLost(Exception):
    """Another instance owns the account now; the batch must not be imported by us."""


@dataclass(frozen=True)
class Engine:
    """What an import needs besides the session: settings and the Message-ID signing key."""

    settings: Settings
    secret: bytes

    @property
    def prefix(self) -> str:
        return self.settings.scanner_ticket_prefix

    def own_addresses(self, account: ScannerAccount) -> set[str]:
        found = {a.strip().lower() for a in self.settings.scanner_own_addresses.split(",") if a.strip()}
        found.add(self.settings.default_sender.lower())
        return found


@dataclass
class FetchedMail:
    uid: int
    size: int
    raw: bytes | None = None  # None: not fetched (too large)
    facts: MailFacts | None = None  # parsed before the transaction, to keep it short


@dataclass
class BatchResult:
    outcomes: dict[int, str] = field(default_factory=dict)
    events: int = 0


def now() -> datetime:
    return datetime.now(UTC)


def renew_lease(session: Session, account_id: int, token: str, lease_s: float) -> None:
    result = session.execute(
        update(ScannerAccount)
        .where(and_(col(ScannerAccount.id) == account_id, col(ScannerAccount.lease_owner) == token))
        .values(lease_until=now() + timedelta(seconds=lease_s))
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(f"account {account_id} is no longer leased by this instance")


def checkpoint(session: Session, account_id: int, folder: str, uidvalidity: int) -> int:
    row = session.get(FolderCheckpoint, (account_id, folder, uidvalidity))
    return 0 if row is None else row.last_uid


def _advance(session: Session, account_id: int, folder: str, uidvalidity: int, old: int, new: int) -> None:
    row = session.get(FolderCheckpoint, (account_id, folder, uidvalidity))
    if row is None:
        session.add(
            FolderCheckpoint(account_id=account_id, folder=folder, uidvalidity=uidvalidity, last_uid=new)
        )
        session.flush()
        return
    result = session.execute(
        update(FolderCheckpoint)
        .where(
            and_(
                col(FolderCheckpoint.account_id) == account_id,
                col(FolderCheckpoint.folder) == folder,
                col(FolderCheckpoint.uidvalidity) == uidvalidity,
                col(FolderCheckpoint.last_uid) == old,
            )
        )
        .values(last_uid=new, updated_at=now())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(f"checkpoint of account {account_id} {folder!r} moved under us")


def load_rules(session: Session, account_id: int) -> list[tuple[int | None, RuleIn]]:
    rows = session.exec(
        select(ScannerRule).where(ScannerRule.account_id == account_id).order_by(col(ScannerRule.position))
    ).all()
    return [
        (
            r.id,
            RuleIn(name=r.name, enabled=r.enabled, match=r.match, conditions=r.conditions, actions=r.actions),
        )  # type: ignore[arg-type]
        for r in rows
    ]


def import_batch(
    session: Session,
    engine: Engine,
    account_id: int,
    token: str,
    folder: str,
    uidvalidity: int,
    mails: list[FetchedMail],
    careful: bool = False,
) -> BatchResult:
    """Import a batch in the caller's transaction. The fast path collects the rows of all mails
    and writes them together (``batch.Batch``); if it fails, the caller rolls back and retries
    with ``careful=True``, where each mail has its own savepoint and a mail that fails goes to
    the error folder."""
    renew_lease(session, account_id, token, engine.settings.scanner_lease_s)
    account = session.get(ScannerAccount, account_id)
    assert account is not None
    last = checkpoint(session, account_id, folder, uidvalidity)
    rules = load_rules(session, account_id)
    result = BatchResult()
    todo = [m for m in sorted(mails, key=lambda m: m.uid) if m.uid > last]
    for mail in todo:
        if (
            mail.facts is None
            and mail.raw is not None
            and mail.size <= engine.settings.scanner_max_message_bytes
        ):
            mail.facts = parse_for_import(mail.raw, engine.prefix)
    with session.no_autoflush:
        if careful:
            for mail in todo:
                _import_carefully(session, engine, account, folder, uidvalidity, mail, rules, result)
        else:
            batch = _begin(session, engine, account, todo)
            try:
                for mail in todo:
                    outcome, events = _import_one(
                        session, engine, account, folder, uidvalidity, mail, rules, batch
                    )
                    result.outcomes[mail.uid] = outcome
                    result.events += events
                batch.finish(session, tickets.acknowledger(engine, batch))
                result.events += batch.acks_sent
            finally:
                session.info.pop("ms_batch", None)
    newest = max([last, *(m.uid for m in mails)])
    if newest > last:
        _advance(session, account_id, folder, uidvalidity, last, newest)
    account.last_scan_at = now()
    session.add(account)
    return result


def _begin(session: Session, engine: Engine, account: ScannerAccount, mails: list[FetchedMail]) -> Batch:
    """A batch for ``mails``, with what they need from the database read in a few queries."""
    batch = Batch(
        account_id=account.id or 0, prefix=engine.prefix, start=engine.settings.scanner_ticket_start
    )
    parsed = [(m, m.facts) for m in mails if m.raw is not None and m.facts is not None]
    batch.prefetch(
        session,
        fingerprints=[fingerprint(f, m.raw) for m, f in parsed if m.raw is not None],
        senders=[f.from_email for _m, f in parsed],
        digests=[d for _m, f in parsed for d in (f.raw_sha256, *(a.sha256 for a in f.attachments))],
        reference_keys=[k for _m, f in parsed for k in threads.reference_order(f.in_reply_to, f.references)],
    )
    session.info["ms_batch"] = batch
    return batch


def _import_carefully(
    session: Session,
    engine: Engine,
    account: ScannerAccount,
    folder: str,
    uidvalidity: int,
    mail: FetchedMail,
    rules: list[tuple[int | None, RuleIn]],
    result: BatchResult,
) -> None:
    try:
        with session.begin_nested():
            batch = _begin(session, engine, account, [mail])
            try:
                outcome, events = _import_one(
                    session, engine, account, folder, uidvalidity, mail, rules, batch
                )
                batch.finish(session, tickets.acknowledger(engine, batch))
                events += batch.acks_sent
            finally:
                session.info.pop("ms_batch", None)
    except Exception as exc:  # one hostile mail must not block the inbox
        session.info.pop("ms_blobs_added", None)  # may name rows the savepoint rolled back
        log.exception("account %s: mail uid %s could not be imported", account.id, mail.uid)
        outcome, events = "error", 0
        _to_error_folder(session, account, folder, uidvalidity, mail, f"import failed: {type(exc).__name__}")
    result.outcomes[mail.uid] = outcome
    result.events += events


def _pending(
    session: Session,
    account: ScannerAccount,
    folder: str,
    uidvalidity: int,
    uid: int,
    action: str,
    target: str | None = None,
) -> None:
    batch = current(session)
    if batch is not None:
        batch.action(folder, uidvalidity, uid, action, target)
        return
    session.add(
        PendingAction(
            account_id=account.id,
            folder=folder,
            uidvalidity=uidvalidity,
            uid=uid,
            action=action,
            target=target,
        )  # type: ignore[arg-type]
    )


def _to_error_folder(
    session: Session,
    account: ScannerAccount,
    folder: str,
    uidvalidity: int,
    mail: FetchedMail,
    reason: str,
    facts: MailFacts | None = None,
) -> None:
    digest = store_blob(session, mail.raw) if mail.raw is not None else None
    session.add(
        ErrorMail(
            account_id=account.id,  # type: ignore[arg-type]
            folder=folder,
            uid=mail.uid,
            moved_to=account.error_folder,
            reason=reason[:2_000],
            size=mail.size,
            message_id=(facts.message_id or None)[:998] if facts and facts.message_id else None,
            subject=(facts.subject if facts else "")[:2_000],
            raw_sha256=digest,
        )
    )
    _pending(session, account, folder, uidvalidity, mail.uid, "move", account.error_folder)


def _import_one(
    session: Session,
    engine: Engine,
    account: ScannerAccount,
    folder: str,
    uidvalidity: int,
    mail: FetchedMail,
    rules: list[tuple[int | None, RuleIn]],
    batch: Batch,
) -> tuple[str, int]:
    settings = engine.settings
    if mail.raw is None or mail.size > settings.scanner_max_message_bytes:
        _to_error_folder(
            session,
            account,
            folder,
            uidvalidity,
            mail,
            f"too large: {mail.size} bytes (limit {settings.scanner_max_message_bytes})",
        )
        return "error", 0
    facts = mail.facts or parse_for_import(mail.raw, engine.prefix)
    fp = fingerprint(facts, mail.raw)
    seen = fp in batch.known_fingerprints
    batch.known_fingerprints.add(fp)
    if seen:
        _pending(session, account, folder, uidvalidity, mail.uid, "seen")
        return "duplicate", 0
    outcome, events, decision, ref = _handle(session, engine, account, facts, mail.raw, rules)
    if outcome == "unparseable":
        _to_error_folder(
            session,
            account,
            folder,
            uidvalidity,
            mail,
            f"unparseable: {(facts.error or 'no sender address')[:500]}",
            facts,
        )
        return "error", 0
    batch.imported.append((fp, outcome, ref))
    if decision.ticket == "delete":
        _pending(session, account, folder, uidvalidity, mail.uid, "delete")
    else:
        if decision.mark_read:
            _pending(session, account, folder, uidvalidity, mail.uid, "seen")
        if decision.move_to:
            _pending(session, account, folder, uidvalidity, mail.uid, "move", decision.move_to)
    return outcome, events


def _handle(
    session: Session,
    engine: Engine,
    account: ScannerAccount,
    facts: MailFacts,
    raw: bytes,
    rules: list[tuple[int | None, RuleIn]],
) -> tuple[str, int, Decision, CommentRef | None]:
    settings = engine.settings
    nothing = Decision()
    if facts.header(settings.scanner_loop_header) is not None:
        return "loop", 0, nothing, None
    if facts.from_email and facts.from_email in engine.own_addresses(account):
        return "own_sender", 0, nothing, None
    if facts.kind == "bounce":
        return "bounce", _publish_bounce(session, facts), nothing, None
    if not facts.from_email:
        return "unparseable", 0, nothing, None
    if facts.kind == "auto_reply":
        return "auto_reply", 0, nothing, None
    decision = decide(rules, facts.view())
    if decision.ticket in ("ignore", "delete"):
        return decision.ticket, 0, decision, None
    return tickets.import_mail(session, engine, account, facts, raw, decision)


def _publish_bounce(session: Session, facts: MailFacts) -> int:
    bounce = facts.bounce or {}
    recipient = bounce.get("recipient")
    if not recipient:
        return 0
    status = str(bounce.get("status") or "")
    hard = bool(bounce.get("hard"))
    original = bounce.get("original_message_id")
    key = f"bounce\x00{original}\x00{recipient}\x00{facts.message_id}"
    try:
        event = DeliveryEvent(
            message_id=uuid.uuid5(EVENT_NAMESPACE, key),
            correlation_id=(original or f"bounce:{facts.message_id or ''}")[:200],
            recipient=recipient,
            status=DeliveryStatus.BOUNCED,
            source="mail_scanner",
            enhanced_code=status[:20] or None,
            reason=f"{'hard' if hard else 'soft'} bounce" + (f" ({status})" if status else ""),
            message_id_header=original[:998] if original else None,
        )
    except ValueError:
        log.warning("bounce with an unusable recipient address; no delivery event")
        return 0
    enqueue(session, MAIL_DELIVERY_EVENTS, event, key=event.recipient)
    return 1


def dry_run(session: Session, engine: Engine, account: ScannerAccount, raw: bytes) -> dict[str, object]:
    """What importing ``raw`` into ``account`` would do, without changing anything."""
    facts = parse(raw, engine.prefix)
    report: dict[str, object] = {
        "kind": facts.kind,
        "from_email": facts.from_email,
        "subject": facts.subject,
        "ticket_number": facts.ticket_number,
        "matched_rule_id": None,
        "matched_rule": None,
        "actions": {},
    }
    if len(raw) > engine.settings.scanner_max_message_bytes:
        return {**report, "outcome": "error", "reason": "too large"}
    if facts.header(engine.settings.scanner_loop_header) is not None:
        return {**report, "outcome": "loop"}
    if facts.from_email and facts.from_email in engine.own_addresses(account):
        return {**report, "outcome": "own_sender"}
    if facts.kind == "bounce":
        return {**report, "outcome": "bounce", "bounce": facts.bounce}
    if facts.kind == "auto_reply":
        return {**report, "outcome": "auto_reply"}
    decision = decide(load_rules(session, account.id), facts.view())  # type: ignore[arg-type]
    report.update(
        matched_rule_id=decision.rule_id,
        matched_rule=decision.rule_name,
        actions=decision.model_dump(exclude={"rule_id", "rule_name"}),
    )
    if decision.ticket in ("ignore", "delete"):
        return {**report, "outcome": decision.ticket}
    ticket, note = (
        (None, None) if decision.ticket == "create" else tickets.find_ticket_for(session, engine, facts)
    )
    if ticket is not None:
        return {**report, "outcome": "comment_added", "ticket_number": ticket.number}
    return {**report, "outcome": "ticket_created", "note": note}
