"""Who gets which trigger when (pure functions, no database)."""

from __future__ import annotations

from dataclasses import dataclass

CORRELATION_PREFIX = "et:"

STATUS_BY_KIND = {
    "registration.created": "registered",
    "registration.cancelled": "cancelled",
    "registration.waitlisted": "waitlisted",
    "registration.moved_from_waitlist": "registered",
    "registration.attended": "attended",
}
ACTIVE_STATUSES = ("registered", "attended")

# The registration status a send of each action needs at the moment it goes out.
REQUIRED_STATUS = {
    "registration": ACTIVE_STATUSES,
    "waitlist": ("waitlisted",),
    "cancellation": ("cancelled",),
    "before_start": ACTIVE_STATUSES,
    "after_end": ACTIVE_STATUSES,
    "certificate": ("attended",),
}


@dataclass(frozen=True)
class TriggerFilter:
    recipients: str  # participants, staff, both
    sub_event: str | None
    functions: tuple[str, ...]


@dataclass(frozen=True)
class Registrant:
    role: str  # participant, staff
    sub_event: str | None
    function: str | None


def correlation_id(trigger_id: int, registration_id: str) -> str:
    """Deterministic per (trigger, registration): the gateway sends each at most once."""
    return f"{CORRELATION_PREFIX}{trigger_id}:{registration_id}"


def trigger_prefix(trigger_id: int) -> str:
    return f"{CORRELATION_PREFIX}{trigger_id}:"


def matches(trigger: TriggerFilter, registrant: Registrant) -> bool:
    """Does the trigger address this registrant (recipient group, sub-event, staff function)?"""
    if trigger.recipients == "participants" and registrant.role != "participant":
        return False
    if trigger.recipients == "staff" and registrant.role != "staff":
        return False
    if trigger.sub_event is not None and registrant.sub_event != trigger.sub_event:
        return False
    if trigger.functions and (registrant.function or "") not in trigger.functions:
        return False
    return True


def transition_action(old_status: str | None, new_status: str) -> str | None:
    """The immediate trigger action a status change sets off (None for repeats and other moves)."""
    if old_status == new_status:
        return None
    if new_status == "registered" and old_status in (None, "waitlisted", "cancelled"):
        return "registration"
    if new_status == "waitlisted":
        return "waitlist"
    if new_status == "cancelled":
        return "cancellation"
    return None


def skip_reason(
    action: str,
    *,
    trigger_active: bool,
    trigger_matches: bool,
    registration_status: str,
    has_email: bool,
    event_cancelled: bool,
    event_started: bool,
    template_usable: bool,
) -> str | None:
    """Why a due send must not go out now (None: send it). Checked when the send fires, so
    anything that changed since it was planned is respected."""
    if not trigger_active:
        return "trigger deactivated"
    if not trigger_matches:
        return "registrant no longer matches the trigger"
    if event_cancelled and action != "cancellation":
        return "event cancelled"
    if registration_status not in REQUIRED_STATUS[action]:
        return f"registration is {registration_status}"
    if action == "before_start" and event_started:
        return "event already started"
    if not has_email:
        return "no email address"
    if not template_usable:
        return "template deleted or inactive"
    return None
