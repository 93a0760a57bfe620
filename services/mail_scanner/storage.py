"""Database access for the mail scanner."""

from __future__ import annotations

from sqlmodel import Session, select

from services.mail_scanner.models import Requester
from shared.contracts import ContactErased, ContactOptedOut, ContactUpserted
from shared.timeutil import as_utc


def save_requester(session: Session, message: ContactUpserted | ContactOptedOut | ContactErased) -> bool:
    """Keep the requester directory in step with the CRM (opt-outs do not matter here; a GDPR
    erase removes the entry)."""
    if isinstance(message, ContactOptedOut):
        return False
    if isinstance(message, ContactErased):
        row = session.get(Requester, message.contact_id)
        if row is not None:
            session.delete(row)
        return row is not None
    row = session.get(Requester, message.contact_id)
    if row is not None and as_utc(message.occurred_at) < as_utc(row.updated_at):
        return False
    row = row or Requester(contact_id=message.contact_id)
    row.email = message.email.lower() if message.email else None
    row.name = " ".join(p for p in (message.first_name, message.last_name) if p)
    row.updated_at = message.occurred_at
    session.add(row)
    return True


def requester_by_email(session: Session, email: str) -> Requester | None:
    return session.exec(select(Requester).where(Requester.email == email.lower())).first()
