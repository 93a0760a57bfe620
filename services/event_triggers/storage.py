"""Database access for the event triggers service."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Session, select

from services.event_triggers.models import DeliveryRecord, MassEvent
from shared.contracts import DeliveryEvent, MassEventChanged


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def save_mass_event(session: Session, message: MassEventChanged) -> bool:
    """Apply an event announcement; older announcements than the stored one are ignored."""
    event = session.get(MassEvent, message.event_id)
    if event is not None and _aware(message.occurred_at) < _aware(event.updated_at):
        return False
    event = event or MassEvent(
        event_id=message.event_id,
        event_number=message.event_number,
        name=message.name,
        start=message.start,
        end=message.end,
    )
    for field in (
        "event_number",
        "name",
        "start",
        "end",
        "time_zone",
        "location",
        "registration_start",
        "registration_end",
        "sub_events",
    ):
        setattr(event, field, getattr(message, field))
    event.cancelled = message.kind == "mass_event.cancelled"
    event.updated_at = message.occurred_at
    session.add(event)
    return True


def save_delivery_event(session: Session, message: DeliveryEvent) -> bool:
    """Store a delivery status once (redelivered events are recognised by their message id)."""
    key = str(message.message_id)
    if session.exec(select(DeliveryRecord.id).where(DeliveryRecord.message_id == key)).first():
        return False
    session.add(
        DeliveryRecord(
            message_id=key,
            correlation_id=message.correlation_id,
            recipient=str(message.recipient),
            status=message.status.value,
            reason=message.reason,
            smtp_code=message.smtp_code,
            occurred_at=message.occurred_at,
        )
    )
    return True


def deliveries_for(session: Session, correlation_prefix: str) -> list[DeliveryRecord]:
    query = select(DeliveryRecord).where(DeliveryRecord.correlation_id.startswith(correlation_prefix))  # type: ignore[attr-defined]
    return list(session.exec(query.order_by(DeliveryRecord.occurred_at)).all())
