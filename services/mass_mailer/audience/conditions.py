"""Target-group conditions on contact fields: validation and evaluation (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

STANDARD_FIELDS = ("email", "first_name", "last_name", "language")
Operator = Literal["eq", "ne", "contains", "starts_with", "in", "exists", "not_exists", "gt", "lt"]


class Condition(BaseModel):
    """``field`` is a standard field or ``custom.<name>``; all conditions of a group must hold."""

    model_config = ConfigDict(extra="forbid")

    field: Annotated[
        str,
        Field(
            min_length=1,
            max_length=100,
            pattern=r"^(email|first_name|last_name|language|custom\.[\w.-]{1,80})$",
        ),
    ]
    op: Operator
    value: Any = None


def field_value(contact: Mapping[str, Any], name: str) -> Any:
    if name.startswith("custom."):
        custom = contact.get("custom_fields") or {}
        return custom.get(name[len("custom.") :]) if isinstance(custom, Mapping) else None
    return contact.get(name)


def _text(value: Any) -> str:
    return str(value).casefold()


def holds(condition: Condition, contact: Mapping[str, Any]) -> bool:
    value = field_value(contact, condition.field)
    wanted = condition.value
    match condition.op:
        case "exists":
            return value not in (None, "")
        case "not_exists":
            return value in (None, "")
        case _ if value is None:
            return condition.op == "ne"
        case "eq":
            return _text(value) == _text(wanted)
        case "ne":
            return _text(value) != _text(wanted)
        case "contains":
            return _text(wanted) in _text(value)
        case "starts_with":
            return _text(value).startswith(_text(wanted))
        case "in":
            return isinstance(wanted, list) and _text(value) in {_text(w) for w in wanted}
        case "gt" | "lt":
            try:
                left, right = float(value), float(wanted)
            except (TypeError, ValueError):
                return False
            return left > right if condition.op == "gt" else left < right
    return False


def matches(conditions: list[Condition], contact: Mapping[str, Any]) -> bool:
    """True when every condition holds (an empty list matches nobody: conditions are optional)."""
    return bool(conditions) and all(holds(c, contact) for c in conditions)
