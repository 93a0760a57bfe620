"""Per-account mail rules: pure evaluation of ordered rules against a parsed mail.

Regular expressions come from admins but run on hostile mail, so they are guarded: patterns are
length-limited and rejected when they nest quantifiers (the classic catastrophic-backtracking
shape), and every subject is truncated to ``MAX_SUBJECT_CHARS`` before matching, which bounds
the work of any pattern that passes.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_PATTERN_CHARS = 300
MAX_SUBJECT_CHARS = 20_000
# a quantified group that itself holds a quantifier or an alternation: (a+)+, (\w*)*, (a|aa)+
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}|](?:[^()\\]|\\.)*\)\s*[+*{]")
_BACKREFERENCE = re.compile(r"\\[1-9]")

Field_ = Literal["from", "to", "cc", "subject", "body", "header"]
Operator = Literal["contains", "equals", "begins_with", "ends_with", "regex"]
ActionType = Literal[
    "create_ticket", "add_to_ticket", "set_fields", "move", "mark_read", "delete", "ignore"
]  # fmt: skip


def check_pattern(pattern: str) -> None:
    """Raise ValueError for a pattern that is too long, invalid or prone to runaway backtracking."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"regex longer than {MAX_PATTERN_CHARS} characters")
    if _NESTED_QUANTIFIER.search(pattern) or _BACKREFERENCE.search(pattern):
        raise ValueError(
            "regex with a repeated group that repeats or alternates inside, or with back-references, "
            "is not allowed"
        )
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex: {exc}") from None


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: Field_
    header: Annotated[str, Field(max_length=200, pattern=r"^[\x21-\x39\x3b-\x7e]+$")] | None = None
    operator: Operator = "contains"
    value: Annotated[str, Field(max_length=1_000)]
    case_insensitive: bool = True

    @model_validator(mode="after")
    def _valid(self) -> Condition:
        if self.field == "header" and not self.header:
            raise ValueError("a header condition needs the header name")
        if self.operator == "regex":
            check_pattern(self.value)
        return self


class Action(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: ActionType
    folder: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    priority: Annotated[str, Field(max_length=50)] | None = None
    category: Annotated[str, Field(max_length=200)] | None = None
    assigned_group: Annotated[str, Field(max_length=200)] | None = None
    status: Literal["open", "pending", "closed"] | None = None

    @model_validator(mode="after")
    def _valid(self) -> Action:
        if self.type == "move" and not self.folder:
            raise ValueError("a move action needs a folder")
        return self


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    enabled: bool = True
    match: Literal["all", "any"] = "all"
    conditions: Annotated[list[Condition], Field(min_length=1, max_length=50)]
    actions: Annotated[list[Action], Field(min_length=1, max_length=20)]

    @field_validator("actions")
    @classmethod
    def _one_ticket_decision(cls, actions: list[Action]) -> list[Action]:
        decisive = {a.type for a in actions} & {"create_ticket", "add_to_ticket", "ignore", "delete"}
        if len(decisive) > 1:
            raise ValueError(f"conflicting actions: {sorted(decisive)}")
        return actions


class MailView(BaseModel):
    """What rules look at, flattened from a parsed mail."""

    from_: str = ""
    to: list[str] = []
    cc: list[str] = []
    subject: str = ""
    body: str = ""
    headers: list[tuple[str, str]] = []


class Decision(BaseModel):
    """What the rules decided: the ticket handling, field changes and mailbox actions."""

    rule_id: int | None = None
    rule_name: str | None = None
    ticket: Literal["auto", "create", "follow_up", "ignore", "delete"] = "auto"
    fields: dict[str, str] = {}
    move_to: str | None = None
    mark_read: bool = True


@lru_cache(maxsize=512)
def _compiled(pattern: str, flags: int) -> re.Pattern[str]:
    return re.compile(pattern, flags)


def _test(operator: Operator, value: str, subject: str, case_insensitive: bool) -> bool:
    subject = subject[:MAX_SUBJECT_CHARS]
    if operator == "regex":
        return _compiled(value, re.IGNORECASE if case_insensitive else 0).search(subject) is not None
    if case_insensitive:
        value, subject = value.casefold(), subject.casefold()
    if operator == "contains":
        return value in subject
    if operator == "equals":
        return value == subject
    if operator == "begins_with":
        return subject.startswith(value)
    return subject.endswith(value)


def _subjects(condition: Condition, mail: MailView) -> list[str]:
    if condition.field == "from":
        return [mail.from_]
    if condition.field in ("to", "cc"):
        return list(getattr(mail, condition.field))
    if condition.field == "subject":
        return [mail.subject]
    if condition.field == "body":
        return [mail.body]
    wanted = (condition.header or "").lower()
    return [value for name, value in mail.headers if name.lower() == wanted]


def condition_matches(condition: Condition, mail: MailView) -> bool:
    return any(
        _test(condition.operator, condition.value, s, condition.case_insensitive)
        for s in _subjects(condition, mail)
    )


def rule_matches(rule: RuleIn, mail: MailView) -> bool:
    results = (condition_matches(c, mail) for c in rule.conditions)
    return all(results) if rule.match == "all" else any(results)


def decide(rules: list[tuple[int | None, RuleIn]], mail: MailView) -> Decision:
    """The first enabled rule that matches decides; no match: the default handling."""
    for rule_id, rule in rules:
        if not rule.enabled or not rule_matches(rule, mail):
            continue
        decision = Decision(rule_id=rule_id, rule_name=rule.name)
        for action in rule.actions:
            if action.type == "create_ticket":
                decision.ticket = "create"
            elif action.type == "add_to_ticket":
                decision.ticket = "follow_up"
            elif action.type in ("ignore", "delete"):
                decision.ticket = action.type
            elif action.type == "move":
                decision.move_to = action.folder
            elif action.type == "mark_read":
                decision.mark_read = True
            elif action.type == "set_fields":
                changes: dict[str, Any] = action.model_dump(
                    include={"priority", "category", "assigned_group", "status"}, exclude_none=True
                )
                decision.fields.update(changes)
        return decision
    return Decision()
