"""Versioned message contracts for every topic (see shared.topics).

Each message carries ``schema_version``; a consumer rejects (dead-letters) versions it does not know.
Evolving a contract: add optional fields within a version; anything else is a new version.
"""

from shared.contracts.base import Message
from shared.contracts.contacts import (
    ContactErased,
    ContactMessage,
    ContactOptedOut,
    ContactUpserted,
    TargetGroupMembership,
)
from shared.contracts.events import MassEventChanged, RegistrationChanged
from shared.contracts.helpdesk import TicketEvent
from shared.contracts.mail import (
    Attachment,
    BulkBatch,
    BulkRecipient,
    DeliveryEvent,
    DeliveryStatus,
    OutboundEmail,
)
from shared.contracts.templates import TemplateChanged

__all__ = [
    "Attachment",
    "BulkBatch",
    "BulkRecipient",
    "ContactErased",
    "ContactMessage",
    "ContactOptedOut",
    "ContactUpserted",
    "DeliveryEvent",
    "DeliveryStatus",
    "MassEventChanged",
    "Message",
    "OutboundEmail",
    "RegistrationChanged",
    "TargetGroupMembership",
    "TemplateChanged",
    "TicketEvent",
]
