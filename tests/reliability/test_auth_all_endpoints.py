"""Every HTTP endpoint of every service refuses a missing, invalid or under-scoped API key.

Routes are read from each app's own route tables (FastAPI's and FastStream's ASGI routes), so a
new endpoint is covered the day it is added: it either declares ``require_scope(...)`` or it is
in PUBLIC below, else this suite fails.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import fastapi.routing
import pytest
from fastapi.dependencies.models import Dependant

from services.event_triggers.app import create_app as create_triggers
from services.mail_scanner.app import create_app as create_scanner
from services.mass_mailer.app import create_app as create_mailer
from tests.reliability.hostile_support import Running, fleet

pytestmark = pytest.mark.timeout(240)

# The only endpoints that answer without an API key, and why. Keep this list short.
OPS = {
    ("GET", "/healthz"),  # liveness probe of the orchestrator: answers {"status": "ok"} only
    ("GET", "/readyz"),  # readiness probe: broker/database reachability, no data
    ("GET", "/metrics"),  # Prometheus scrape: counters and gauges, no personal data
    ("GET", "/openapi.json"),  # the API's own description (no data)
    ("GET", "/docs"),  # Swagger UI page for the description above
    ("GET", "/docs/oauth2-redirect"),  # part of the Swagger UI page
    ("GET", "/redoc"),  # ReDoc page for the same description
    ("GET", "/asyncapi"),  # AsyncAPI page of the topics (no data)
    ("GET", "/asyncapi.json"),  # its JSON
}
PUBLIC: dict[str, set[tuple[str, str]]] = {
    "mass_mailer": OPS
    | {
        # Links in bulk mail: the HMAC token in the path is the recipient's credential.
        ("GET", "/u/{token}"),  # unsubscribe confirmation page
        ("POST", "/u/{token}"),  # RFC 8058 one-click unsubscribe (mail clients POST without a key)
        ("GET", "/m/open/{token}.gif"),  # open-tracking pixel
        ("GET", "/m/view/{token}"),  # "view in browser"
        ("GET", "/m/survey/{token}"),  # survey link (expires per template's survey_valid_days)
        # The drag-and-drop editor's static page and assets (no data: the page calls the
        # /v1/editor and /v1/templates APIs with the user's key).
        ("GET", "/editor/new"),
        ("GET", "/editor/{template_id}"),
        ("GET", "/editor/static/{name}"),
    },
    "mail_scanner": OPS,
    # "Add to calendar" link in event mails: the HMAC token query parameter is the credential.
    "event_triggers": OPS | {("GET", "/calendar/{event_id}.ics")},
}
BODY_METHODS = {"POST", "PUT", "PATCH"}


def _flat(routes: list[Any]) -> Iterator[Any]:
    for route in routes:
        if isinstance(route, fastapi.routing._IncludedRouter):
            yield from route.effective_route_contexts()
        else:
            yield route


def endpoints(running: Running) -> list[tuple[str, str, Dependant | None]]:
    """(method, path template, dependant) of every HTTP endpoint the process serves."""
    found: list[tuple[str, str, Dependant | None]] = []
    for route in _flat(list(running.app.http.routes)):
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            if method != "HEAD":
                found.append((method, route.path, getattr(route, "dependant", None)))
    # FastStream's own ASGI routes (served before FastAPI sees the request): any method works.
    for path, _handler in running.app.routes:
        found.append(("POST" if path.endswith("/try") else "GET", path, None))
    return found


def required_scopes(dependant: Dependant | None) -> set[str]:
    """The scopes of every ``require_scope(...)`` dependency of an endpoint (read from the closure)."""
    if dependant is None:
        return set()
    scopes: set[str] = set()
    for dependency in dependant.dependencies:
        call = dependency.call
        if getattr(call, "__qualname__", "").startswith("require_scope."):
            cells = dict(zip(call.__code__.co_freevars, call.__closure__ or (), strict=True))
            scopes.add(cells["scope"].cell_contents)
        scopes |= required_scopes(dependency)
    return scopes


def concrete(path: str) -> str:
    """Dummy values for path parameters: ids that do not exist."""
    return re.sub(r"\{[^}]+\}", "1", path)


@pytest.fixture(scope="module")
async def services(kafka_broker, tmp_path_factory) -> AsyncIterator[dict[str, Running]]:
    apps = {"mass_mailer": create_mailer, "mail_scanner": create_scanner, "event_triggers": create_triggers}
    async with fleet(apps, kafka_broker, tmp_path_factory.mktemp("auth")) as running:
        yield running


async def call(running: Running, method: str, path: str, headers: dict[str, str]) -> int:
    kwargs: dict[str, Any] = {"headers": headers}
    if method in BODY_METHODS:
        kwargs["json"] = {}
    reply = await running.client.request(method, concrete(path), **kwargs)
    return reply.status_code


@pytest.mark.parametrize("service", ["mass_mailer", "mail_scanner", "event_triggers"])
async def test_every_endpoint_needs_a_key_with_its_scope(services: dict[str, Running], service: str) -> None:
    running = services[service]
    routes = endpoints(running)
    all_scopes = set().union(*(required_scopes(d) for _, _, d in routes))
    assert len(all_scopes) >= 2, all_scopes  # the introspection works at all
    seen_public: set[tuple[str, str]] = set()
    problems: list[str] = []
    checked = 0
    keys: dict[frozenset[str], str] = {}

    def key(scopes: set[str]) -> str:
        if frozenset(scopes) not in keys:
            keys[frozenset(scopes)] = running.api_key(*scopes)
        return keys[frozenset(scopes)]

    for method, path, dependant in routes:
        if (method, path) in PUBLIC[service]:
            seen_public.add((method, path))
            continue
        scopes = required_scopes(dependant)
        if not scopes:
            problems.append(f"{method} {path}: declares no require_scope() and is not in PUBLIC")
        for label, headers in (
            ("no key", {}),
            ("invalid key", {"X-API-Key": "msk_nosuchkey_0123456789abcdef"}),
            ("invalid bearer", {"Authorization": "Bearer msk_nosuchkey_0123456789abcdef"}),
            ("malformed key", {"X-API-Key": "not-a-key"}),
        ):
            status = await call(running, method, path, headers)
            if status != 401:
                problems.append(f"{method} {path} with {label}: {status}, expected 401")
        for scope in scopes:
            # Every other scope of the service, but not this one (and never admin).
            lacking = key(all_scopes - {scope})
            status = await call(running, method, path, {"X-API-Key": lacking})
            if status != 403:
                problems.append(f"{method} {path} with a key lacking {scope!r}: {status}, expected 403")
        if scopes:
            # Positive control: the scopes found are the ones the endpoint really checks.
            holder = key(scopes)
            status = await call(running, method, path, {"Authorization": f"Bearer {holder}"})
            if status in (401, 403):
                problems.append(f"{method} {path} with a key holding {sorted(scopes)}: {status}")
        checked += 1
    stale = PUBLIC[service] - seen_public
    assert not stale, f"PUBLIC lists endpoints that no longer exist: {sorted(stale)}"
    assert not problems, "\n".join(problems)
    assert checked >= 10


@pytest.mark.parametrize("service", ["mass_mailer", "mail_scanner", "event_triggers"])
async def test_public_endpoints_answer_without_a_key_and_leak_nothing(
    services: dict[str, Running], service: str
) -> None:
    running = services[service]
    for method, path in sorted(PUBLIC[service]):
        reply = await running.client.request(method, concrete(path))
        # Public pages never ask for a key; a dummy or missing token is refused (404 / 422).
        assert reply.status_code in (200, 404, 422), (method, path, reply.status_code, reply.text[:200])
        assert running.settings.master_key is not None
        assert running.settings.master_key.get_secret_value() not in reply.text


@pytest.mark.parametrize("service", ["mass_mailer", "mail_scanner", "event_triggers"])
async def test_asyncapi_try_it_out_cannot_publish_without_a_key(
    services: dict[str, Running], service: str
) -> None:
    """FastStream's AsyncAPI "try it out" endpoint publishes any payload to any topic: it must
    not exist (it would let anyone put an OutboundEmail on mail.outbound.transactional)."""
    running = services[service]
    form = {
        "channelName": running.topic("mail.outbound.transactional"),
        "message": {"message": {"correlation_id": "x", "to": ["victim@example.org"], "text": "spam"}},
        "options": {"sendToRealBroker": True},
    }
    reply = await running.client.post("/asyncapi/try", json=form)
    assert reply.status_code in (401, 403, 404, 405), (reply.status_code, reply.text[:200])
    assert not [path for path, _ in running.app.routes if path.endswith("/try")]
