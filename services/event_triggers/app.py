"""Event triggers service: ``faststream run services.event_triggers.app:app``."""

from services.event_triggers.api import routers
from services.event_triggers.handlers import register_consumers
from shared.service import ServiceApp, build_service
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> ServiceApp:
    return build_service(
        "event_triggers",
        title="mailsvc event triggers",
        description="Confirmations, reminders and follow-ups for mass events.",
        register_consumers=register_consumers,
        api_routers=routers,
        settings=settings,
    )


app = create_app()
