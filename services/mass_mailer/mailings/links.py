"""Per-recipient link tokens and VERP addresses (pure).

An unsubscribe/view token is ``<mailing>.<contact, base64url>.<HMAC-SHA256 truncated to 128 bits>``
over (mailing, contact): it names its contact, so it cannot be turned into another contact's
link without the key. A survey token adds when it stops working (Unix seconds, 0 = never),
under the MAC too, so it cannot be extended. VERP: ``bounce+<mailing>.<delivery>.<mac>@<bounce
domain>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from services.mass_mailer.templates.links import survey_valid_until
from shared.settings import Settings

_VERP = re.compile(r"^bounce\+(\d{1,12})\.(\d{1,15})\.([0-9a-f]{16})@", re.IGNORECASE)


def link_key(settings: Settings) -> bytes:
    """The HMAC key: the configured link secret, else one derived from the master key."""
    if settings.mailing_link_secret is not None:
        return settings.mailing_link_secret.get_secret_value().encode()
    if settings.master_key is not None:
        return hmac.new(settings.master_key.get_secret_value().encode(), b"mailing-links", "sha256").digest()
    # Neither configured (dev mode): a random key kept in the data dir (one host only).
    path = settings.data_dir / "mailing-link.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_bytes(32))
    return path.read_bytes()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, *parts: str) -> str:
    return _b64(hmac.new(key, "\x00".join(parts).encode(), hashlib.sha256).digest()[:16])


def make_token(key: bytes, mailing_id: int, contact_id: str) -> str:
    return f"{mailing_id}.{_b64(contact_id.encode())}.{_mac(key, 'u', str(mailing_id), contact_id)}"


@dataclass(frozen=True)
class TokenSubject:
    mailing_id: int
    contact_id: str


def read_token(key: bytes, token: str) -> TokenSubject | None:
    """The (mailing, contact) a token was made for, or None when it is malformed or forged."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or len(token) > 400:
        return None
    try:
        contact_id = _unb64(parts[1]).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    expected = _mac(key, "u", parts[0], contact_id)
    # bytes: compare_digest raises TypeError on non-ASCII str (a hostile URL must be a 404)
    if not hmac.compare_digest(expected.encode(), parts[2].encode()):
        return None
    return TokenSubject(int(parts[0]), contact_id)


def make_survey_token(key: bytes, mailing_id: int, contact_id: str, valid_until: datetime | None) -> str:
    until = str(int(valid_until.timestamp())) if valid_until is not None else "0"
    mac = _mac(key, "s", str(mailing_id), contact_id, until)
    return f"{mailing_id}.{_b64(contact_id.encode())}.{until}.{mac}"


@dataclass(frozen=True)
class SurveySubject:
    mailing_id: int
    contact_id: str
    valid_until: datetime | None

    def expired(self, now: datetime) -> bool:
        return self.valid_until is not None and now >= self.valid_until


def read_survey_token(key: bytes, token: str) -> SurveySubject | None:
    """What a survey token was made for, or None when it is malformed or forged."""
    parts = token.split(".")
    if len(parts) != 4 or not parts[0].isdigit() or not parts[2].isdigit() or len(token) > 420:
        return None
    try:
        contact_id = _unb64(parts[1]).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    expected = _mac(key, "s", parts[0], contact_id, parts[2])
    if not hmac.compare_digest(expected.encode(), parts[3].encode()):
        return None
    until = int(parts[2])
    return SurveySubject(int(parts[0]), contact_id, datetime.fromtimestamp(until, UTC) if until else None)


def survey_link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/m/survey/{quote(token, safe='')}"


def recipient_survey_link(
    key: bytes,
    base_url: str,
    mailing_id: int,
    contact_id: str,
    sending_started: datetime | None,
    valid_days: int | None,
) -> str:
    """A contact's survey link, valid ``valid_days`` from the start of sending (None: forever)."""
    until = survey_valid_until(sending_started or datetime.now(UTC), valid_days)
    return survey_link(base_url, make_survey_token(key, mailing_id, contact_id, until))


def verp_address(key: bytes, mailing_id: int, delivery_id: int, domain: str) -> str:
    mac = hmac.new(key, f"v|{mailing_id}|{delivery_id}".encode(), hashlib.sha256).hexdigest()[:16]
    return f"bounce+{mailing_id}.{delivery_id}.{mac}@{domain}"


def read_verp(key: bytes, address: str) -> tuple[int, int] | None:
    """(mailing id, delivery id) of a VERP bounce address we made, else None."""
    match = _VERP.match(address.strip().strip("<>"))
    if match is None:
        return None
    mailing_id, delivery_id, mac = int(match[1]), int(match[2]), match[3].lower()
    expected = hmac.new(key, f"v|{mailing_id}|{delivery_id}".encode(), hashlib.sha256).hexdigest()[:16]
    return (mailing_id, delivery_id) if hmac.compare_digest(expected, mac) else None


def correlation_id(mailing_id: int, delivery_id: int) -> str:
    """The correlation id of a bulk delivery on mail.delivery-events."""
    return f"bulk-{mailing_id}-{delivery_id}"


def parse_correlation_id(value: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"bulk-(\d{1,12})-(\d{1,15})", value)
    return (int(match[1]), int(match[2])) if match else None


@dataclass(frozen=True)
class RecipientLinks:
    unsubscribe: str
    online_view: str
    pixel: str


def recipient_links(base_url: str, token: str) -> RecipientLinks:
    base = base_url.rstrip("/")
    quoted = quote(token, safe="")
    return RecipientLinks(
        unsubscribe=f"{base}/u/{quoted}",
        online_view=f"{base}/m/view/{quoted}",
        pixel=f"{base}/m/open/{quoted}.gif",
    )
