from datetime import UTC, datetime, timedelta

from services.mass_mailer.delivery_rules import after_send, pending_recipients, row_status
from shared.mail.smtp import Outcome, Refusal, SendResult

NOW = datetime(2026, 1, 1, tzinfo=UTC)
RETRY = {"retry_base_s": 10.0, "retry_max_s": 60.0}


def result(outcome, code=250, refused=None, detail="ok"):
    return SendResult(outcome, code, None, detail, refused or {}, outcome is Outcome.SENT)


def test_sent_to_all():
    step = after_send(
        result(Outcome.SENT),
        ["a@x.org", "b@x.org"],
        {},
        attempt=1,
        now=NOW,
        deadline=NOW + timedelta(days=1),
        **RETRY,
    )
    assert step.status == "sent" and step.retry_at is None
    assert step.changes == {"a@x.org": ["sent", ""], "b@x.org": ["sent", ""]}


def test_partial_refusals_split_into_retry_and_failure():
    refused = {
        "b@x.org": Refusal(450, "mailbox busy", "4.2.1"),
        "c@x.org": Refusal(550, "no such user", "5.1.1"),
    }
    step = after_send(
        result(Outcome.SENT, refused=refused),
        ["a@x.org", "b@x.org", "c@x.org"],
        {},
        attempt=1,
        now=NOW,
        deadline=NOW + timedelta(days=1),
        **RETRY,
    )
    assert step.status == "deferred"
    assert [s for s, _ in step.changes.values()] == ["sent", "deferred", "failed"]
    assert NOW + timedelta(seconds=5) <= step.retry_at <= NOW + timedelta(seconds=10)
    merged = {**{}, **step.changes}
    assert pending_recipients(["a@x.org", "b@x.org", "c@x.org"], merged) == ["b@x.org"]


def test_temporary_failure_past_the_deadline_fails():
    step = after_send(
        result(Outcome.RETRYABLE, 451, detail="451 later"),
        ["a@x.org"],
        {},
        attempt=7,
        now=NOW,
        deadline=NOW + timedelta(seconds=1),
        **RETRY,
    )
    assert step.status == "failed" and step.retry_at is None
    assert "gave up after 7 attempts" in step.changes["a@x.org"][1]


def test_permanent_failure_keeps_earlier_successes():
    earlier = {"a@x.org": ["sent", ""], "b@x.org": ["deferred", "busy"]}
    step = after_send(
        result(Outcome.PERMANENT, 550, detail="550 gone"),
        ["b@x.org"],
        earlier,
        attempt=2,
        now=NOW,
        deadline=NOW + timedelta(days=1),
        **RETRY,
    )
    assert step.changes == {"b@x.org": ["failed", "550 gone"]}
    assert step.status == "sent"  # someone got it; the failure is per recipient
    assert row_status({"a@x.org": ["failed", "x"]}) == "failed"
