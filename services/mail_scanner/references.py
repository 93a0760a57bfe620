# ruff: noqa: RUF001  (multilingual patterns contain look-alike letters on purpose)
"""Ticket references in mail: signed Message-IDs, ticket numbers in subjects and bodies.

Our own Message-IDs look like ``<tt.{ticket}.{comment}.{nonce}.{mac}@domain>``; the MAC is an
HMAC-SHA256 over everything before it, so a customer cannot forge a reference to a ticket
that is not theirs by guessing ids.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

_MAC_CHARS = 20  # hex digits of the HMAC kept (80 bits)
_OUR_ID = re.compile(
    r"^<?tt\.(?P<ticket>\d{1,18})\.(?P<comment>\d{1,18}|x)\.(?P<nonce>[0-9a-f]{8,32})"
    r"\.(?P<mac>[0-9a-f]{" + str(_MAC_CHARS) + r"})@(?P<domain>[^<>@\s]{1,255})>?$"
)

# Reply/forward prefixes in many languages, with optional counters: "Re[2]:", "Re^2:", "Re(3):".
_PREFIX_WORDS = (
    r"re|aw|sv|vs|antw|antwort|ant|rif|r|réf|ref|rép|rv|enc|odp|yn|atb|vá|vs|ynt|"
    r"fwd?|fw|vb|wg|tr|trans|i|fs|rv|doorst|pd|továbbítás|答复|回复|转发|回覆|轉寄|返信|転送"
)
_PREFIX = re.compile(
    r"^\s*(?:(?:" + _PREFIX_WORDS + r")\s*\.?\s*(?:\[\d{1,4}\]|\^\d{1,4}|\(\d{1,4}\))?\s*[:：]\s*"
    r"|\[(?:fwd?|fw)\s*:[^\]]*\]\s*)",
    re.IGNORECASE,
)
_LIST_TAG = re.compile(r"^\s*\[[^\]\[]{1,40}\]\s*")


def make_message_id(ticket_id: int, comment_id: int | None, secret: bytes, domain: str) -> str:
    """A Message-ID for mail we send about a ticket; unique and unforgeable."""
    if ticket_id < 0 or (comment_id is not None and comment_id < 0):
        raise ValueError("ids must not be negative")
    nonce = secrets.token_hex(8)
    body = f"tt.{ticket_id}.{'x' if comment_id is None else comment_id}.{nonce}"
    return f"<{body}.{_mac(body, domain, secret)}@{domain.lower()}>"


def verify_message_id(message_id: str, secret: bytes, domain: str) -> int | None:
    """The ticket id of one of our own Message-IDs, or None (foreign, forged, other domain)."""
    if not message_id or len(message_id) > 400:
        return None
    match = _OUR_ID.match(message_id.strip())
    if match is None or match["domain"].lower() != domain.lower():
        return None
    body = f"tt.{match['ticket']}.{match['comment']}.{match['nonce']}"
    if not hmac.compare_digest(match["mac"], _mac(body, domain, secret)):
        return None
    return int(match["ticket"])


def ticket_from_message_ids(ids: list[str], secret: bytes, domain: str) -> int | None:
    """The first verified ticket among In-Reply-To/References ids (newest reference first)."""
    for message_id in reversed(ids):
        ticket = verify_message_id(message_id, secret, domain)
        if ticket is not None:
            return ticket
    return None


def _mac(body: str, domain: str, secret: bytes) -> str:
    digest = hmac.new(secret, f"{body}@{domain.lower()}".encode(), hashlib.sha256).hexdigest()
    return digest[:_MAC_CHARS]


def strip_reply_prefixes(subject: str) -> str:
    """The subject without any number of Re:/AW:/SV:/Fwd:/Re[2]: prefixes, whitespace collapsed."""
    text = " ".join((subject or "").split())
    for _ in range(50):
        stripped = _PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return text.strip()


def normalize_subject(subject: str) -> str:
    """A comparison key: no prefixes, no leading list tags, case-folded."""
    text = strip_reply_prefixes(subject)
    for _ in range(10):
        stripped = strip_reply_prefixes(_LIST_TAG.sub("", text, count=1))
        if stripped == text:
            break
        text = stripped
    return text.casefold()


def _number_pattern(prefix: str) -> re.Pattern[str]:
    escaped = re.escape(prefix)
    return re.compile(r"(?<![A-Za-z0-9])" + escaped + r"[#\-: ]?(\d{1,12})(?![0-9])", re.IGNORECASE)


def body_marker(ticket_number: str) -> str:
    """The marker we put into our replies; found again by :func:`ticket_number_from`."""
    return f"[ticket:{ticket_number}]"


def ticket_number_from(subject: str, body: str, prefix: str) -> str | None:
    """The ticket number ("TT1042") in the subject, else in our body marker, else None.

    Only the subject after its reply prefixes counts (so quoting does not matter), and in the
    body only our explicit marker, never a number merely mentioned in quoted text.
    """
    if not prefix:
        return None
    pattern = _number_pattern(prefix)
    match = pattern.search(strip_reply_prefixes(subject or "")[:1000])
    if match:
        return f"{prefix}{match.group(1)}"
    marker = re.compile(r"\[ticket:\s*" + re.escape(prefix) + r"(\d{1,12})\]", re.IGNORECASE)
    found = marker.search(body or "")
    if found:
        return f"{prefix}{found.group(1)}"
    return None
