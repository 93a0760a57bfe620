"""Mass mailer service: ``faststream run services.mass_mailer.app:app``."""

from services.mass_mailer import api, api_senders
from services.mass_mailer.editor import api as editor_api
from services.mass_mailer.handlers import register_consumers
from services.mass_mailer.mailings import engine
from services.mass_mailer.templates import api as templates_api
from shared.service import ServiceApp, build_service
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> ServiceApp:
    return build_service(
        "mass_mailer",
        title="mailsvc mass mailer",
        description="Contacts, target groups, templates, mailings and the outbound gateway.",
        register_consumers=register_consumers,
        api_routers=lambda context: [
            *api.routers(context),
            *api_senders.routers(context),
            *templates_api.routers(context),
            *engine.routers(context),
            *editor_api.routers(context),
        ],
        settings=settings,
    )


app = create_app()
