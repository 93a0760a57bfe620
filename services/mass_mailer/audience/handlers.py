"""Kafka consumers of the audience: target-group membership from CRM workflows, GDPR erase,
and the scheduled "update target group" tasks (a background loop)."""

from __future__ import annotations

import asyncio
import logging

from services.mass_mailer.audience import store
from shared.consumer import subscribe
from shared.contracts import TargetGroupMembership
from shared.contracts.contacts import ContactErased
from shared.db import in_transaction
from shared.service import ServiceContext
from shared.topics import CRM_TARGET_GROUPS

log = logging.getLogger(__name__)


async def erase_contact(context: ServiceContext, message: ContactErased) -> None:
    """GDPR erase from crm.contacts (the crm.contacts consumer calls this for ``contact.erased``)."""
    await in_transaction(context.database_url, store.erase_contact, message.contact_id)


async def run_group_updates(context: ServiceContext) -> int:
    """Run every due update task once; returns how many ran."""
    ran = 0
    while True:
        task = await in_transaction(context.database_url, store.claim_due_task)
        if task is None:
            return ran
        try:
            added, removed = await in_transaction(
                context.database_url, store.evaluate_conditions, task.target_group_id
            )
            result = f"ok: {added} added, {removed} removed"
        except KeyError:
            result = "target group no longer exists"
        await in_transaction(context.database_url, store.record_task_result, task.id, result)
        ran += 1


def register_consumers(context: ServiceContext) -> None:
    group = context.settings.group(context.name)

    async def on_membership(message: TargetGroupMembership) -> None:
        await in_transaction(
            context.database_url,
            store.apply_membership,
            message.target_group_id,
            message.contact_id,
            message.kind == "target_group.member_added",
        )

    subscribe(
        context.broker, context.settings, CRM_TARGET_GROUPS, TargetGroupMembership, on_membership, group=group
    )

    async def group_update_tasks() -> None:
        while True:
            try:
                await run_group_updates(context)
            except Exception:
                log.exception("update-target-group pass failed; will retry")
            await asyncio.sleep(context.settings.group_update_check_s)

    context.background.append(group_update_tasks)
