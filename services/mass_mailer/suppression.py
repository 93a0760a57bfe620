"""The keys an address is suppressed under.

An address is listed as itself (lower case). When its contact is erased (GDPR art. 17) the
block must outlive the personal data, or a later import of the same address would mail someone
who unsubscribed, bounced or complained: the row is then kept under a SHA-256 of the address
only, which answers "is this address blocked?" without storing it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

HASHED_PREFIX = "sha256:"


def hashed(email: str) -> str:
    return HASHED_PREFIX + hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


def lookup_keys(emails: Iterable[str]) -> dict[str, str]:
    """Every key to look up for ``emails``: key -> the lower-cased address it stands for."""
    keys: dict[str, str] = {}
    for email in emails:
        lowered = email.lower()
        keys[lowered] = lowered
        keys[hashed(lowered)] = lowered
    return keys
