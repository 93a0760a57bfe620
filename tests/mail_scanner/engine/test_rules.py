"""Rule evaluation (pure): operators, case sensitivity, all/any, first match, regex guards."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.mail_scanner.rules import Condition, MailView, RuleIn, decide

MAIL = MailView(
    from_="alice@customer.example",
    to=["support@us.example"],
    cc=["boss@customer.example"],
    subject="Invoice 42 overdue",
    body="Please pay.",
    headers=[("X-Priority", "1"), ("List-Id", "<news.example>")],
)


def rule(*conditions: dict, match: str = "all", actions: list[dict] | None = None, name: str = "r") -> RuleIn:
    return RuleIn(
        name=name, match=match, conditions=list(conditions), actions=actions or [{"type": "ignore"}]
    )


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"field": "subject", "operator": "contains", "value": "INVOICE"}, True),
        ({"field": "subject", "operator": "contains", "value": "INVOICE", "case_insensitive": False}, False),
        ({"field": "subject", "operator": "equals", "value": "invoice 42 overdue"}, True),
        ({"field": "subject", "operator": "begins_with", "value": "Invoice"}, True),
        ({"field": "subject", "operator": "ends_with", "value": "overdue"}, True),
        ({"field": "subject", "operator": "regex", "value": r"invoice \d+"}, True),
        ({"field": "from", "operator": "ends_with", "value": "@customer.example"}, True),
        ({"field": "to", "operator": "equals", "value": "support@us.example"}, True),
        ({"field": "cc", "operator": "begins_with", "value": "boss@"}, True),
        ({"field": "body", "operator": "contains", "value": "pay"}, True),
        ({"field": "header", "header": "x-priority", "operator": "equals", "value": "1"}, True),
        ({"field": "header", "header": "X-Missing", "operator": "contains", "value": ""}, False),
    ],
)
def test_operators(condition, expected):
    assert (decide([(1, rule(condition))], MAIL).rule_id == 1) is expected


def test_all_any_and_first_match_wins():
    yes = {"field": "subject", "operator": "contains", "value": "invoice"}
    no = {"field": "subject", "operator": "contains", "value": "refund"}
    assert decide([(1, rule(yes, no))], MAIL).rule_id is None
    assert decide([(1, rule(yes, no, match="any"))], MAIL).rule_id == 1
    first = rule(
        yes, actions=[{"type": "set_fields", "priority": "high"}, {"type": "move", "folder": "Billing"}]
    )
    decision = decide([(1, first), (2, rule(yes))], MAIL)
    assert decision.rule_id == 1 and decision.fields == {"priority": "high"} and decision.move_to == "Billing"
    assert decision.ticket == "auto"
    disabled = rule(yes, name="off")
    disabled.enabled = False
    assert decide([(1, disabled)], MAIL).rule_id is None


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"(\w*)*x", r"(a|aa){2,}+", "x" * 301, r"(a)\1", "(unclosed"])
def test_dangerous_or_invalid_regexes_are_refused(pattern):
    with pytest.raises(ValidationError):
        Condition(field="subject", operator="regex", value=pattern)


def test_conflicting_actions_and_incomplete_conditions_are_refused():
    with pytest.raises(ValidationError):
        rule({"field": "subject", "value": "x"}, actions=[{"type": "ignore"}, {"type": "create_ticket"}])
    with pytest.raises(ValidationError):
        Condition(field="header", value="x")
    with pytest.raises(ValidationError):
        rule({"field": "subject", "value": "x"}, actions=[{"type": "move"}])


def test_hostile_input_is_bounded():
    long_subject = MAIL.model_copy(update={"subject": "a" * 1_000_000 + "!"})
    condition = {"field": "subject", "operator": "regex", "value": r"a{1,5}b"}
    assert decide([(1, rule(condition))], long_subject).rule_id is None
