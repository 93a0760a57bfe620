"""The mass mailer with the mailing engine wired in (also before services/mass_mailer/app.py
wires it), for in-process tests and for ``faststream run tests.mass_mailer.engine.wiring:app``."""

from __future__ import annotations

import inspect
import os
from typing import Any

from services.mass_mailer import handlers
from shared.settings import Settings


def create_app(settings: Settings) -> Any:
    """The mass mailer; with the engine wired in even before services/mass_mailer wires it."""
    from services.mass_mailer import app as app_module

    if "mailings" in inspect.getsource(handlers):
        return app_module.create_app(settings)
    from services.mass_mailer import api, api_senders
    from services.mass_mailer.mailings import engine
    from shared.service import build_service

    def consumers(context: Any) -> None:
        handlers.register_consumers(context)
        engine.register_consumers(context)

    def routers(context: Any) -> list[Any]:
        extra = []
        try:
            from services.mass_mailer.templates import api as templates_api  # type: ignore[attr-defined]

            extra = templates_api.routers(context)
        except (ImportError, AttributeError):
            pass
        return [*api.routers(context), *api_senders.routers(context), *extra, *engine.routers(context)]

    return build_service(
        "mass_mailer",
        title="t",
        description="t",
        register_consumers=consumers,
        api_routers=routers,
        settings=settings,
    )


def __getattr__(name: str) -> Any:
    if name == "app":  # only built when a process asks for it (faststream run)
        os.environ.setdefault("MAILSVC_LOG_LEVEL", "WARNING")
        app = create_app(Settings())
        if target := os.environ.get("MAILSVC_BENCH_PROFILE"):  # bench/mass_send.py --profile
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()

            async def dump() -> None:
                profiler.dump_stats(f"{target}.{os.getpid()}")

            app.service.on_shutdown.append(dump)
        return app
    raise AttributeError(name)
