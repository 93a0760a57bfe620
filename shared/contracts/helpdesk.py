"""Ticket lifecycle events the mail scanner publishes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from shared.contracts.base import Message


class TicketEvent(Message):
    kind: Literal["ticket.created", "ticket.comment_added", "ticket.status_changed"]
    ticket_number: Annotated[str, Field(max_length=50)]
    ticket_id: int
    subject: Annotated[str, Field(max_length=2_000)] = ""
    status: Annotated[str, Field(max_length=50)] = "open"
    requester: Annotated[str, Field(max_length=320)] | None = None
    comment_id: int | None = None
