"""Content-addressed storage of attachments and raw mails (sha256 -> bytes) in the database."""

from __future__ import annotations

import hashlib

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from services.mail_scanner.models import Blob


def store_blob(session: Session, content: bytes, digest: str | None = None) -> str:
    """Store ``content`` once under its sha256 (idempotent, safe against concurrent writers)."""
    digest = digest or hashlib.sha256(content).hexdigest()
    added: set[str] = session.info.setdefault("ms_blobs_added", set())
    if digest in added or session.get(Blob, digest) is not None:
        return digest
    added.add(digest)
    try:
        with session.begin_nested():
            session.add(Blob(sha256=digest, size=len(content), content=content))
    except IntegrityError:
        pass  # stored meanwhile by another transaction: same bytes
    return digest


def get_blob(session: Session, digest: str) -> Blob | None:
    return session.get(Blob, digest)
