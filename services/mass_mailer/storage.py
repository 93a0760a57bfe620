"""Database access for the mass mailer (the only module that issues queries)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Session, select

from services.mass_mailer.contacts import apply_contact_message
from services.mass_mailer.models import Contact, OutboundMessage
from shared.contracts import ContactOptedOut, ContactUpserted


def save_contact_message(session: Session, message: ContactUpserted | ContactOptedOut) -> bool:
    current = session.get(Contact, message.contact_id)
    updated = apply_contact_message(current, message)
    if updated is None:
        return False
    session.add(updated)
    return True


def contacts_by_email(session: Session, emails: list[str]) -> dict[str, Contact]:
    lowered = [e.lower() for e in emails]
    rows = session.exec(select(Contact).where(Contact.email.in_(lowered))).all()  # type: ignore[union-attr]
    return {row.email: row for row in rows if row.email}


def claim_outbound(
    session: Session, correlation_id: str, recipients: list[str], subject: str
) -> OutboundMessage:
    """The outbound row for ``correlation_id``, created on first sight."""
    row = session.exec(
        select(OutboundMessage).where(OutboundMessage.correlation_id == correlation_id)
    ).first()
    if row is None:
        row = OutboundMessage(
            correlation_id=correlation_id, recipients=",".join(recipients)[:20_000], subject=subject[:2_000]
        )
        session.add(row)
        session.flush()
    return row


def record_attempt(
    session: Session,
    correlation_id: str,
    status: str,
    *,
    smtp_code: int | None = None,
    error: str | None = None,
    message_id_header: str | None = None,
) -> None:
    row = session.exec(select(OutboundMessage).where(OutboundMessage.correlation_id == correlation_id)).one()
    row.status = status
    row.attempts += 1
    row.smtp_code = smtp_code
    row.last_error = error[:2_000] if error else None
    row.message_id_header = message_id_header or row.message_id_header
    row.updated_at = datetime.now(UTC)
    session.add(row)
