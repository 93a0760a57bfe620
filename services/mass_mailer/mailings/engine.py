"""The mailing engine's wiring: consumers, background tasks and HTTP routers of the audience
(contacts, target groups) and mailings packages, for services/mass_mailer/handlers.py and app.py."""

from __future__ import annotations

from fastapi import APIRouter

from services.mass_mailer.audience import api as audience_api
from services.mass_mailer.audience import handlers as audience_handlers
from services.mass_mailer.mailings import api as mailings_api
from services.mass_mailer.mailings import handlers as mailings_handlers
from shared.service import ServiceContext


def register_consumers(context: ServiceContext) -> None:
    audience_handlers.register_consumers(context)
    mailings_handlers.register_consumers(context)


def routers(context: ServiceContext) -> list[APIRouter]:
    return [*audience_api.routers(context), *mailings_api.routers(context)]
