"""Pure rules: what an SMTP result means for each recipient of a transactional message."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.consumer import backoff_delay
from shared.mail.smtp import Outcome, SendResult

FINAL_RECIPIENT_STATES = ("sent", "failed")


@dataclass(frozen=True)
class Step:
    """The row's next status, what changed per recipient (``{address: [status, reason]}``) and,
    when something is deferred, when to try again."""

    status: str
    changes: dict[str, list[str]]
    retry_at: datetime | None = None


def pending_recipients(all_recipients: list[str], recipient_status: dict[str, list[str]]) -> list[str]:
    """Recipients without a final status yet (a retry goes only to these)."""
    return [r for r in all_recipients if recipient_status.get(r, [""])[0] not in FINAL_RECIPIENT_STATES]


def row_status(recipient_status: dict[str, list[str]]) -> str:
    states = {status for status, _ in recipient_status.values()}
    if "deferred" in states:
        return "deferred"
    return "sent" if "sent" in states else "failed"


def after_send(
    result: SendResult,
    pending: list[str],
    recipient_status: dict[str, list[str]],
    *,
    attempt: int,
    now: datetime,
    deadline: datetime,
    retry_base_s: float,
    retry_max_s: float,
) -> Step:
    changes: dict[str, list[str]] = {}
    if result.outcome is Outcome.SENT:
        for recipient in pending:
            refusal = result.refused.get(recipient)
            if refusal is None:
                changes[recipient] = ["sent", ""]
            else:
                state = "deferred" if 400 <= refusal.code < 500 else "failed"
                changes[recipient] = [state, f"{refusal.code} {refusal.message}"[:2_000]]
    else:
        state = "failed" if result.outcome is Outcome.PERMANENT else "deferred"
        changes = {r: [state, result.detail[:2_000]] for r in pending}

    retry_at = None
    if any(state == "deferred" for state, _ in changes.values()):
        delay = backoff_delay(attempt, retry_base_s, retry_max_s)
        retry_at = now + timedelta(seconds=max(delay, retry_base_s / 2))
        if retry_at > deadline:
            retry_at = None
            for recipient, (state, reason) in changes.items():
                if state == "deferred":
                    changes[recipient] = [
                        "failed",
                        f"gave up after {attempt} attempts (deadline): {reason}"[:2_000],
                    ]
    return Step(row_status({**recipient_status, **changes}), changes, retry_at)
