"""Event triggers service: ``faststream run services.event_triggers.app:app``."""

from __future__ import annotations

from services.event_triggers.api import routers
from services.event_triggers.clock import Clock, FileClock, SystemClock
from services.event_triggers.dispatcher import Dispatcher
from services.event_triggers.handlers import register_consumers
from shared.service import ServiceApp, ServiceContext, build_service
from shared.settings import Settings, get_settings


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> ServiceApp:
    """``clock`` decides when sends are due (default: the system clock, or the clock file if
    MAILSVC_EVENT_TRIGGERS_CLOCK_FILE is set)."""
    settings = settings or get_settings()
    if clock is None:
        path = settings.event_triggers_clock_file
        clock = FileClock(path) if path is not None else SystemClock()
    dispatchers: dict[str, Dispatcher] = {}

    def consumers(context: ServiceContext) -> None:
        dispatcher = dispatchers["main"] = Dispatcher(context, clock)
        context.background.append(dispatcher.run_forever)
        register_consumers(context, dispatcher)

    def api(context: ServiceContext) -> list:
        return routers(context, dispatchers["main"])

    return build_service(
        "event_triggers",
        title="mailsvc event triggers",
        description="Confirmations, reminders, staff notices, certificates, GDPR deletion.",
        register_consumers=consumers,
        api_routers=api,
        settings=settings,
    )


app = create_app()
