"""Queries for sender identities and DKIM keys."""

from __future__ import annotations

from sqlmodel import Session, col, select

from services.mass_mailer.models import DkimKeyRecord, SenderIdentity


def identity_by_ref(session: Session, ref: str | None) -> SenderIdentity | None:
    """By name or numeric id; ``None`` means the identity flagged default (if any)."""
    if ref is None:
        return session.exec(select(SenderIdentity).where(col(SenderIdentity.is_default))).first()
    if ref.isdigit():
        found = session.get(SenderIdentity, int(ref))
        if found is not None:
            return found
    return session.exec(select(SenderIdentity).where(SenderIdentity.name == ref)).first()


def keys_for_domain(session: Session, domain: str | None) -> list[DkimKeyRecord]:
    if not domain:
        return []
    return list(session.exec(select(DkimKeyRecord).where(DkimKeyRecord.domain == domain.lower())).all())


def clear_other_defaults(session: Session, keep_id: int | None) -> None:
    for other in session.exec(select(SenderIdentity).where(col(SenderIdentity.is_default))).all():
        if other.id != keep_id:
            other.is_default = False
            session.add(other)
