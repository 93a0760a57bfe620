"""Mailing actions: create, edit (drafts only), schedule/unschedule, send now, pause, resume, cancel.

Each function takes a session and raises ``Refused`` (HTTP 409/422 in the API) with a clear reason.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col

from services.mass_mailer.audience.models import TargetGroup
from services.mass_mailer.mailings.models import Delivery, Mailing
from services.mass_mailer.mailings.store import now
from shared.timeutil import as_utc


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_group(session: Session, group_id: str) -> None:
    group = session.get(TargetGroup, group_id)
    if group is None:
        raise Refused(422, f"unknown target group {group_id!r}")
    if group.group_type != "email":
        raise Refused(422, "only email-type target groups can be used for mailings")
    if not group.active:
        raise Refused(422, "the target group is not active")


def template_version(session: Session, template_id: int) -> int:
    from services.mass_mailer.templates.store import current_version

    compiled = current_version(session, template_id)
    if compiled is None:
        raise Refused(422, f"template {template_id} has no active version")
    return compiled.version_id


def create(session: Session, values: dict[str, Any]) -> Mailing:
    check_group(session, values["target_group_id"])
    template_version(session, values["template_id"])
    mailing = Mailing(**values)
    session.add(mailing)
    session.flush()
    return mailing


def get(session: Session, mailing_id: int) -> Mailing:
    mailing = session.get(Mailing, mailing_id)
    if mailing is None:
        raise Refused(404, "no such mailing")
    return mailing


def edit(session: Session, mailing_id: int, values: dict[str, Any]) -> Mailing:
    mailing = get(session, mailing_id)
    if mailing.status != "draft":
        raise Refused(409, f"the mailing is {mailing.status}: only drafts can be edited")
    if "target_group_id" in values:
        check_group(session, values["target_group_id"])
    if "template_id" in values:
        template_version(session, values["template_id"])
    for name, value in values.items():
        setattr(mailing, name, value)
    mailing.updated_at = now()
    session.add(mailing)
    return mailing


def schedule(session: Session, mailing_id: int, at: datetime | None) -> Mailing:
    """``at`` None: send now. The template version is pinned here (the mailing is read-only now)."""
    mailing = get(session, mailing_id)
    if mailing.status != "draft":
        raise Refused(409, f"the mailing is {mailing.status}; only a draft can be scheduled")
    moment = now()
    when = as_utc(at) or moment
    if when < moment - timedelta(seconds=60):
        raise Refused(422, "the send time is in the past")
    check_group(session, mailing.target_group_id)
    mailing.template_version_id = template_version(session, mailing.template_id)
    mailing.status = "scheduled"
    mailing.scheduled_at = when
    mailing.updated_at = moment
    session.add(mailing)
    return mailing


def unschedule(session: Session, mailing_id: int) -> Mailing:
    mailing = get(session, mailing_id)
    hit = session.execute(
        update(Mailing)
        .where(
            col(Mailing.id) == mailing_id,
            col(Mailing.status) == "scheduled",
            col(Mailing.scheduled_at) > now(),
        )
        .values(status="draft", scheduled_at=None, updated_at=now())
    )
    if not hit.rowcount:  # type: ignore[attr-defined]
        raise Refused(
            409,
            f"the mailing is {mailing.status}; only scheduled, before its send time, can be unscheduled",
        )
    session.refresh(mailing)
    return mailing


def _move(
    session: Session, mailing_id: int, allowed: tuple[str, ...], values: dict[str, Any], action: str
) -> Mailing:
    mailing = get(session, mailing_id)
    hit = session.execute(
        update(Mailing)
        .where(col(Mailing.id) == mailing_id, col(Mailing.status).in_(allowed))
        .values(updated_at=now(), **values)
    )
    if not hit.rowcount:  # type: ignore[attr-defined]
        raise Refused(409, f"cannot {action} a mailing that is {mailing.status}")
    session.refresh(mailing)
    return mailing


def pause(session: Session, mailing_id: int) -> Mailing:
    return _move(session, mailing_id, ("sending",), {"status": "paused"}, "pause")


def resume(session: Session, mailing_id: int) -> Mailing:
    """Continue exactly where it stopped: queued deliveries are published again."""
    return _move(session, mailing_id, ("paused",), {"status": "sending", "requeue_cursor": 0}, "resume")


def cancel(session: Session, mailing_id: int) -> Mailing:
    mailing = _move(
        session,
        mailing_id,
        ("draft", "scheduled", "sending", "paused"),
        {"status": "cancelled", "finished_at": now()},
        "cancel",
    )
    session.execute(
        update(Delivery)
        .where(col(Delivery.mailing_id) == mailing_id, col(Delivery.status).in_(("queued", "deferred")))
        .values(status="failed", last_reply="not sent: mailing cancelled", updated_at=now())
    )
    return mailing
