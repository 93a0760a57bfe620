"""Write one import batch with few statements: what the per-mail logic decides is collected here
and written at the end of the batch, in the batch's own transaction.

Tickets are inserted in one flush (their ids give the ticket numbers), comments, fingerprints,
mailbox actions, blobs and ticket events each with one multi-row INSERT. The order of the
events in the outbox is the order of the mails. A lookup that needs the batch's new tickets
(a follow-up by ticket number) flushes them first, so a follow-up in the same batch as its
ticket still finds it; a follow-up by a stored Message-ID finds the batch's earlier mails in
``new_refs`` (their comments are not written yet).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
from sqlmodel import Session, col

from services.mail_scanner.models import Blob, ImportedMail, PendingAction, Requester, Ticket, TicketComment
from shared.contracts.helpdesk import TicketEvent
from shared.outbox import OutboxEvent
from shared.topics import HELPDESK_TICKET_EVENTS

EVENT_NAMESPACE = uuid.UUID("2b0d8c8e-61a4-4d0e-bb2f-1d5f0b7c9e33")
_CHUNK = 400  # values per IN (...) list


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class NewTicket:
    """A ticket opened in this batch, before it is written (a plain object: building ORM
    instances costs more than the rest of the import); the columns of ``Ticket``."""

    account_id: int | None
    subject: str
    requester_email: str
    requester_name: str = ""
    requester_contact_id: str | None = None
    cc: list[str] = field(default_factory=list)
    note: str | None = None
    status: str = "open"
    priority: str | None = None
    category: str | None = None
    assigned_group: str | None = None
    last_message_id: str | None = None
    created_at: datetime = field(default_factory=now)
    updated_at: datetime = field(default_factory=now)
    id: int | None = None
    number: str | None = None

    def row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _TICKET_COLUMNS}


_TICKET_COLUMNS = [f for f in NewTicket.__dataclass_fields__ if f not in ("id", "number")]


@dataclass
class CommentRef:
    """A comment decided during the batch; ``comment_id`` is known once the batch is written."""

    ticket: Ticket | NewTicket
    row: dict[str, Any]
    created: bool
    status: str  # the ticket's status right after this mail, for its events
    status_changed: bool
    facts: Any = None  # for the auto-acknowledgement of a new ticket
    comment_id: int | None = None

    @property
    def ticket_id(self) -> int | None:
        return self.ticket.id


@dataclass
class Batch:
    """The writes of one import batch, collected until :meth:`finish`."""

    account_id: int
    prefix: str
    start: int
    known_fingerprints: set[str] = field(default_factory=set)
    requesters: dict[str, Requester | None] = field(default_factory=dict)
    known_blobs: set[str] = field(default_factory=set)
    blobs: dict[str, bytes] = field(default_factory=dict)
    new_tickets: list[NewTicket] = field(default_factory=list)
    by_number: dict[str, int] = field(default_factory=dict)
    comments: list[CommentRef] = field(default_factory=list)
    imported: list[tuple[str, str, CommentRef | None]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    acks: dict[str, Any] = field(default_factory=dict)
    acks_sent: int = 0
    # Message keys (threads.message_key) of stored incoming mails -> their tickets' ids, newest
    # first; and of this batch's mails -> their tickets, in mail order.
    stored_refs: dict[str, list[int]] = field(default_factory=dict)
    new_refs: dict[str, list[Ticket | NewTicket]] = field(default_factory=dict)

    # --- reads done once per batch ---

    def prefetch(
        self,
        session: Session,
        fingerprints: Iterable[str],
        senders: Iterable[str],
        digests: Iterable[str],
        reference_keys: Iterable[str] = (),
    ) -> None:
        for chunk in _chunks(sorted(set(fingerprints))):
            found = session.execute(
                select(ImportedMail.fingerprint).where(
                    col(ImportedMail.account_id) == self.account_id, col(ImportedMail.fingerprint).in_(chunk)
                )
            ).scalars()
            self.known_fingerprints.update(found)
        for chunk in _chunks(sorted({s for s in senders if s})):
            self.requesters.update(dict.fromkeys(chunk))
            for row in session.exec(select(Requester).where(col(Requester.email).in_(chunk))).all():
                if row.email is not None and self.requesters.get(row.email) is None:
                    self.requesters[row.email] = row
        for chunk in _chunks(sorted({d for d in digests if d})):
            self.known_blobs.update(
                session.execute(select(Blob.sha256).where(col(Blob.sha256).in_(chunk))).scalars()
            )
        self.stored_tickets(session, reference_keys)

    def stored_tickets(self, session: Session, keys: Iterable[str]) -> dict[str, list[int]]:
        """The tickets holding an incoming mail with one of these message keys (newest first),
        read once per batch."""
        missing = sorted({k for k in keys if k not in self.stored_refs})
        for chunk in _chunks(missing):
            for key in chunk:
                self.stored_refs[key] = []
            rows = session.execute(
                select(TicketComment.message_key, TicketComment.ticket_id)
                .where(col(TicketComment.message_key).in_(chunk), col(TicketComment.direction) == "in")
                .distinct()
            ).all()
            for key, ticket_id in rows:
                self.stored_refs[key].append(ticket_id)
        for key in missing:
            self.stored_refs[key].sort(reverse=True)
        return self.stored_refs

    def requester(self, session: Session, email: str) -> Requester | None:
        if email in self.requesters:
            return self.requesters[email]
        return session.exec(select(Requester).where(Requester.email == email)).first()

    # --- collected writes ---

    def blob(self, content: bytes, digest: str) -> str:
        if digest not in self.known_blobs:
            self.blobs.setdefault(digest, content)
        return digest

    def new_ticket(self, ticket: NewTicket) -> None:
        self.new_tickets.append(ticket)

    def remember_ref(self, key: str, ticket: Ticket | NewTicket) -> None:
        """A mail of this batch with message key ``key`` joined (or opened) ``ticket``."""
        self.new_refs.setdefault(key, []).append(ticket)

    def ticket_by_number(self, session: Session, number: str) -> Ticket | None:
        """A ticket of this batch (written by :meth:`flush_tickets`) by its number."""
        ticket_id = self.by_number.get(number.upper()) or self.by_number.get(number)
        return session.get(Ticket, ticket_id) if ticket_id is not None else None

    def flush_tickets(self, session: Session) -> None:
        """Insert the batch's new tickets (one multi-row INSERT) and give them their numbers."""
        if not self.new_tickets:
            return
        table = _table(Ticket)
        ids = session.execute(
            insert(table).returning(table.c.id, sort_by_parameter_order=True),
            [t.row() for t in self.new_tickets],
        ).scalars()
        numbers = []
        for ticket, ticket_id in zip(self.new_tickets, ids, strict=True):
            ticket.id = ticket_id
            ticket.number = f"{self.prefix}{self.start + ticket_id}"
            self.by_number[ticket.number] = ticket_id
            numbers.append({"ticket_id": ticket_id, "ticket_number": ticket.number})
        session.execute(
            update(table)
            .where(table.c.id == bindparam("ticket_id"))
            .values(number=bindparam("ticket_number")),
            numbers,
        )
        self.new_tickets.clear()

    def action(self, folder: str, uidvalidity: int, uid: int, action: str, target: str | None = None) -> None:
        self.actions.append(
            {
                "account_id": self.account_id,
                "folder": folder,
                "uidvalidity": uidvalidity,
                "uid": uid,
                "action": action,
                "target": target,
            }
        )

    # --- the end of the batch ---

    def finish(self, session: Session, ack: Callable[[Session, Any, Any], int]) -> None:
        """Write everything collected; ``ack(session, ticket, facts)`` sends the optional
        auto-acknowledgement of a new ticket (in mail order, after its ticket has a number)."""
        self.flush_tickets(session)
        if self.comments:
            rows = [{**ref.row, "ticket_id": ref.ticket.id} for ref in self.comments]
            ids = session.execute(
                insert(_table(TicketComment)).returning(
                    _table(TicketComment).c.id, sort_by_parameter_order=True
                ),
                rows,
            ).scalars()
            for ref, comment_id in zip(self.comments, ids, strict=True):
                ref.comment_id = comment_id
        events: list[dict[str, Any]] = []
        for ref in self.comments:
            ticket = ref.ticket
            if ref.created:
                events.append(_event(ticket, "ticket.created", ref.comment_id, "", ref.status))
                self.acks_sent += ack(session, ticket, ref.facts)
            else:
                events.append(_event(ticket, "ticket.comment_added", ref.comment_id, "", ref.status))
                if ref.status_changed:
                    events.append(
                        _event(ticket, "ticket.status_changed", ref.comment_id, ref.status, ref.status)
                    )
        if self.blobs:
            session.execute(
                _insert_ignoring_duplicates(session, Blob),
                [{"sha256": d, "size": len(c), "content": c} for d, c in self.blobs.items()],
            )
            self.known_blobs.update(self.blobs)
            self.blobs.clear()
        if self.imported:
            moment = now()
            session.execute(
                insert(_table(ImportedMail)),
                [
                    {
                        "account_id": self.account_id,
                        "fingerprint": fp,
                        "outcome": outcome,
                        "ticket_id": ref.ticket_id if ref else None,
                        "comment_id": ref.comment_id if ref else None,
                        "created_at": moment,
                    }
                    for fp, outcome, ref in self.imported
                ],
            )
        if self.actions:
            session.execute(insert(_table(PendingAction)), self.actions)
        if events:
            session.execute(insert(_table(OutboxEvent)), events)
        session.flush()  # ticket numbers and field changes, auto-acknowledgements
        self.comments.clear()
        self.imported.clear()
        self.actions.clear()


def ticket_event(
    ticket: Ticket | NewTicket, kind: str, comment_id: int | None, stamp: str, status: str
) -> TicketEvent:
    """The event of a ticket change; its id is derived from the change, so repeats dedupe."""
    return TicketEvent(
        message_id=uuid.uuid5(EVENT_NAMESPACE, f"{ticket.id}:{kind}:{comment_id}:{stamp}"),
        kind=kind,  # type: ignore[arg-type]
        ticket_number=ticket.number or "",
        ticket_id=ticket.id or 0,
        subject=ticket.subject[:2_000],
        status=status,
        requester=ticket.requester_email,
        comment_id=comment_id,
    )


def _event(
    ticket: Ticket | NewTicket, kind: str, comment_id: int | None, stamp: str, status: str
) -> dict[str, Any]:
    """An outbox row as ``shared.outbox.enqueue`` writes it, for a multi-row INSERT."""
    event = ticket_event(ticket, kind, comment_id, stamp, status)
    return {
        "topic": HELPDESK_TICKET_EVENTS,
        "key": ticket.number,
        "payload": event.model_dump_json(),
        "headers": {},
        "created_at": now(),
    }


def _insert_ignoring_duplicates(session: Session, model: Any) -> Any:
    """INSERT that skips rows whose key exists (stored meanwhile by another transaction)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(_table(model)).on_conflict_do_nothing()
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(_table(model)).on_conflict_do_nothing()
    return insert(_table(model)).prefix_with("IGNORE")  # MySQL/MariaDB


def _table(model: Any) -> Table:
    """The model's table: Core multi-row INSERTs skip the ORM's per-row bookkeeping."""
    return model.__table__  # type: ignore[no-any-return]


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def current(session: Session) -> Batch | None:
    return session.info.get("ms_batch")
