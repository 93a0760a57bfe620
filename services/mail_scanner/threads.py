"""Threading a follow-up on the customer's own Message-IDs: the pure decisions.

A mail whose In-Reply-To/References name an incoming mail we stored joins that mail's ticket,
but only when its sender is already on the ticket (the requester, a CC of the ticket, or the
From/Cc of one of its articles): Message-IDs are not secret (everyone on the Cc sees them),
so a copied reference alone must not let a stranger write into someone's ticket.

The order of the references (``follow_up``): our signed Message-IDs, then the ticket number,
then stored Message-IDs; each later one only when the earlier ones found nothing usable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_REFERENCES = 50  # ids of one mail looked up (References of a long thread can hold hundreds)
MAX_CANDIDATES = 50  # tickets one mail is checked against, over all its ids


def message_key(message_id: str | None) -> str | None:
    """The stored, indexed form of a Message-ID: the SHA-256 (hex) of ``<id>``.

    Ids are up to 998 characters of anything, too long for an index on every database (a
    PostgreSQL B-tree entry is limited to about 2,700 bytes); the digest is not."""
    if not message_id:
        return None
    text = message_id.strip().strip("<>").strip()
    if not text:
        return None
    return hashlib.sha256(f"<{text}>".encode("utf-8", "replace")).hexdigest()


def reference_order(in_reply_to: Sequence[str], references: Sequence[str]) -> list[str]:
    """The keys of the ids a follow-up names, nearest first: In-Reply-To, then References from
    the newest (last) to the oldest; without repeats, at most ``MAX_REFERENCES``."""
    keys: dict[str, None] = {}
    for message_id in [*in_reply_to, *reversed(references)]:
        key = message_key(message_id)
        if key is not None:
            keys.setdefault(key)
            if len(keys) >= MAX_REFERENCES:
                break
    return list(keys)


def may_write(
    sender: str,
    requester: str,
    ticket_cc: Iterable[str],
    articles: Iterable[tuple[str, Iterable[str] | None]] = (),
) -> bool:
    """Whether ``sender`` is on the ticket: its requester, one of its CC addresses, or the
    author or a Cc of one of its articles (``articles``: (author, cc list) pairs)."""
    sender = sender.strip().lower()
    if not sender:
        return False
    if sender == requester.strip().lower() or sender in {a.lower() for a in ticket_cc}:
        return True
    for author, cc in articles:
        if sender == (author or "").strip().lower() or sender in {a.lower() for a in cc or ()}:
            return True
    return False


def most_recent_first(
    held: Iterable[T], id_of: Callable[[T], int | None], stored_ids: Iterable[int], limit: int
) -> list[T | int]:
    """The tickets holding one Message-ID, most recent first, at most ``limit``: ``held`` are
    tickets this batch's mails joined or opened (in mail order; a ticket not written yet has no
    id and is the newest), ``stored_ids`` the ids of tickets in the database. Each ticket once;
    a held ticket stands for its id."""
    ranked: list[tuple[tuple[int, int], T | int]] = []
    seen: set[int] = set()
    for seq, ticket in enumerate(held):
        ticket_id = id_of(ticket)
        if ticket_id is None:
            if any(other is ticket for _rank, other in ranked):
                continue
            ranked.append(((1, seq), ticket))
        elif ticket_id not in seen:
            seen.add(ticket_id)
            ranked.append(((0, ticket_id), ticket))
    for ticket_id in stored_ids:
        if ticket_id not in seen:
            seen.add(ticket_id)
            ranked.append(((0, ticket_id), ticket_id))
    ranked.sort(key=lambda item: item[0], reverse=True)
    return [item for _rank, item in ranked[: max(limit, 0)]]


def pick(
    keys: Sequence[str], candidates: Mapping[str, Sequence[T]], allowed: Callable[[T], bool]
) -> tuple[T | None, T | None]:
    """The ticket to thread into: for the first key (nearest reference) that has one, the first
    of its candidates (most recent ticket first) the sender may write to. Returns (ticket,
    None), or (None, the first ticket refused) when no candidate is allowed."""
    refused: T | None = None
    checked: list[T] = []
    for key in keys:
        for ticket in candidates.get(key, ()):
            if any(ticket is seen for seen in checked):
                continue
            checked.append(ticket)
            if allowed(ticket):
                return ticket, None
            if refused is None:
                refused = ticket
    return None, refused


@dataclass(frozen=True)
class FollowUp(Generic[T]):
    """Which ticket a mail follows up (``ticket`` None: a new one) and by what reference."""

    ticket: T | None = None
    via: str = "new"  # signed | number | message_id | new
    refused_number: T | None = None  # named by its number, but the sender is not on it
    refused_reference: T | None = None  # named by a stored Message-ID, but the sender is not on it


def follow_up(
    signed: Callable[[], T | None],
    numbered: Callable[[], tuple[T | None, bool]],
    stored: Callable[[], tuple[T | None, T | None]],
) -> FollowUp[T]:
    """Signed Message-IDs first (unforgeable: no sender check), then the ticket number (found,
    and whether the sender may use it), then stored Message-IDs (``pick``'s result). Each is
    only asked when the ones before it gave nothing usable."""
    ticket = signed()
    if ticket is not None:
        return FollowUp(ticket, "signed")
    by_number, allowed = numbered()
    if by_number is not None and allowed:
        return FollowUp(by_number, "number")
    by_reference, refused = stored()
    if by_reference is not None:
        return FollowUp(by_reference, "message_id")
    return FollowUp(None, "new", by_number, refused)
