"""The template catalogue: the mass mailer announces every template change, so other services
(event triggers, the scanner's replies) can validate template references without its database."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from shared.contracts.base import Message


class TemplateChanged(Message):
    """Keyed by template id; the latest message per key is the template's current state."""

    kind: Literal["template.upserted", "template.deleted"]
    template_id: int
    name: Annotated[str, Field(max_length=200)]
    active: bool = True
    current_version_id: int | None = None
    subject: Annotated[str, Field(max_length=2_000)] = ""
