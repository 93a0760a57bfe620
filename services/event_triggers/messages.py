"""Build the outbound mail for one due send (pure: no database, no Kafka).

The gateway renders ``template_id`` with ``merge_data`` = {"contact", "event", "registration",
"links"}; we add the calendar attachment and, for certificates, the PDF.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from services.event_triggers.certificate import certificate_for
from services.event_triggers.ics import EventInfo, build_ics
from services.event_triggers.schedule import zone
from services.event_triggers.storage import SendJob
from shared.contracts import Attachment, OutboundEmail
from shared.timeutil import as_utc

ICS_METHOD = {"registration": "REQUEST", "before_start": "REQUEST", "cancellation": "CANCEL"}
SOURCE = "event_triggers"


def event_info(event: dict[str, Any]) -> EventInfo:
    return EventInfo(
        event_id=event["event_id"],
        name=event["name"],
        start=event["start"],
        end=event["end"],
        time_zone=event["time_zone"],
        location=event["location"],
        sequence=event["sequence"],
        cancelled=event["cancelled"],
    )


def _contact(registration: dict[str, Any]) -> dict[str, Any]:
    """The gateway's merge view shows first/last name, email, language; the rest goes to custom."""
    snapshot = dict(registration["contact"])
    shown = {k: snapshot.pop(k) for k in ("first_name", "last_name", "language") if k in snapshot}
    snapshot.pop("email", None)
    return {
        "id": registration["contact_id"],
        "email": registration["email"],
        **shown,
        "custom": {"contact_id": registration["contact_id"], **snapshot},
    }


def merge_data(job: SendJob, calendar_link: str) -> dict[str, Any]:
    event, registration = job.event, job.registration
    tz = zone(event["time_zone"])
    start, end = as_utc(event["start"]).astimezone(tz), as_utc(event["end"]).astimezone(tz)
    return {
        "contact": _contact(registration),
        "event": {
            "id": event["event_id"],
            "number": event["event_number"],
            "name": event["name"],
            "start": start.isoformat(),
            "end": end.isoformat(),
            "start_date": start.strftime("%Y-%m-%d"),
            "start_time": start.strftime("%H:%M"),
            "end_date": end.strftime("%Y-%m-%d"),
            "end_time": end.strftime("%H:%M"),
            "time_zone": event["time_zone"],
            "location": event["location"],
            "cancelled": event["cancelled"],
        },
        "registration": {
            "id": registration["registration_id"],
            "role": registration["role"],
            "function": registration["function"],
            "sub_event": registration["sub_event"],
            "status": registration["status"],
            "answered": registration["answered"],
            "form_answers": registration["answers"],
        },
        "links": {"calendar": calendar_link},
    }


def _attachment(filename: str, content_type: str, content: bytes) -> Attachment:
    return Attachment(
        filename=filename, content_type=content_type, content_b64=base64.b64encode(content).decode()
    )


def build_request(
    job: SendJob,
    *,
    calendar_link: str,
    organizer: str,
    domain: str,
    stamp: datetime,
    ics_cache: dict[tuple[str, str], bytes],
) -> OutboundEmail:
    """The OutboundEmail for ``job`` (raises CertificateError if its certificate cannot render)."""
    data = merge_data(job, calendar_link)
    attachments: list[Attachment] = []
    method = ICS_METHOD.get(job.action)
    if method is not None:
        key = (job.event["event_id"], method)
        if key not in ics_cache:  # one invitation per event and method per batch
            ics_cache[key] = build_ics(
                event_info(job.event), method=method, domain=domain, organizer=organizer, stamp=stamp
            )
        attachments.append(_attachment("invite.ics", "text/calendar", ics_cache[key]))
    if job.action == "certificate" and job.certificate_template:
        pdf = certificate_for(job.certificate_template, data)
        attachments.append(_attachment("certificate.pdf", "application/pdf", pdf))
    return OutboundEmail(
        correlation_id=job.correlation_id,
        sender_identity=job.sender_identity,
        to=[job.registration["email"]],
        template_id=str(job.template_id),
        merge_data=data,
        attachments=attachments,
        source=SOURCE,
    )
