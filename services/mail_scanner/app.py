"""Mail scanner service: ``faststream run services.mail_scanner.app:app``."""

from services.mail_scanner.api import routers
from services.mail_scanner.handlers import register_consumers
from shared.service import ServiceApp, build_service
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> ServiceApp:
    return build_service(
        "mail_scanner",
        title="mailsvc mail scanner",
        description="IMAP inboxes into HelpDesk tickets.",
        register_consumers=register_consumers,
        api_routers=routers,
        settings=settings,
    )


app = create_app()
