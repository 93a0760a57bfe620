"""Every Kafka topic of the system, in one place. Each consumed topic has a dead-letter twin.

| topic | producer | consumers | payload |
|---|---|---|---|
| crm.contacts | CRM | mass_mailer, mail_scanner | ContactUpserted / ContactOptedOut |
| crm.target-groups | CRM workflows | mass_mailer | TargetGroupMembership |
| crm.mass-events | CRM | event_triggers | MassEventChanged |
| crm.registrations | CRM | event_triggers | RegistrationChanged |
| mail.outbound.transactional | triggers, scanner, API | mass_mailer (gateway) | OutboundEmail |
| mail.outbound.bulk | mass_mailer (planner) | mass_mailer (senders) | BulkBatch |
| mail.delivery-events | mass_mailer (gateway) | mass_mailer, event_triggers, mail_scanner | DeliveryEvent |
| helpdesk.ticket-events | mail_scanner | CRM, anyone | TicketEvent |
| mail.templates | mass_mailer | event_triggers, mail_scanner | TemplateChanged (compacted catalogue) |
| events.gdpr-deletions | event_triggers | the CRM | FormAnswersDeleted |
"""

from __future__ import annotations

CRM_CONTACTS = "crm.contacts"
CRM_TARGET_GROUPS = "crm.target-groups"
CRM_MASS_EVENTS = "crm.mass-events"
CRM_REGISTRATIONS = "crm.registrations"
MAIL_OUTBOUND_TRANSACTIONAL = "mail.outbound.transactional"
MAIL_OUTBOUND_BULK = "mail.outbound.bulk"
MAIL_DELIVERY_EVENTS = "mail.delivery-events"
HELPDESK_TICKET_EVENTS = "helpdesk.ticket-events"
MAIL_TEMPLATES = "mail.templates"
EVENTS_GDPR_DELETIONS = "events.gdpr-deletions"

ALL_TOPICS = (
    CRM_CONTACTS,
    CRM_TARGET_GROUPS,
    CRM_MASS_EVENTS,
    CRM_REGISTRATIONS,
    MAIL_OUTBOUND_TRANSACTIONAL,
    MAIL_OUTBOUND_BULK,
    MAIL_DELIVERY_EVENTS,
    HELPDESK_TICKET_EVENTS,
    MAIL_TEMPLATES,
    EVENTS_GDPR_DELETIONS,
)

# Topics some service of ours consumes: each has a dead-letter twin.
CONSUMED_TOPICS = tuple(t for t in ALL_TOPICS if t not in (HELPDESK_TICKET_EVENTS, EVENTS_GDPR_DELETIONS))

DLQ_SUFFIX = ".dlq"


def dlq(topic: str) -> str:
    """The dead-letter topic of ``topic``."""
    return f"{topic}{DLQ_SUFFIX}"
