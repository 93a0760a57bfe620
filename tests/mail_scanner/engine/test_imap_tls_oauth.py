"""The scanner against a Dovecot that speaks TLS and XOAUTH2, as Microsoft 365 and Gmail do:
implicit TLS and STARTTLS with certificate verification on, a certificate nobody trusts refused,
and XOAUTH2 with an access token from the refresh flow, checked by Dovecot's RFC 7662
introspection against the token endpoint's current access token."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

from services.mail_scanner.app import create_app
from tests.integration.harness import AUTH, eventually, running, service_settings
from tests.mail_scanner.engine.helpers import FAST, account_body, append, mail, make_folder, tickets
from tests.mail_scanner.engine.test_accounts_api import TokenServer
from tests.servers.dovecot import DovecotServer

pytestmark = pytest.mark.timeout(180)


class Introspection:
    """RFC 7662 token introspection: a token is active while it is the token server's latest."""

    def __init__(self, tokens: TokenServer, user: str) -> None:
        self.asked: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                token = (form.get("token") or [""])[0]
                outer.asked.append(token)
                latest = f"access-{len(tokens.calls)}"
                body = json.dumps(
                    {"active": bool(tokens.calls) and token == latest, "username": user}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/introspect"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def oauth_tls() -> Iterator[tuple[DovecotServer, TokenServer, Introspection]]:
    with TokenServer() as tokens:
        introspection = Introspection(tokens, "alice")
        try:
            with DovecotServer(ssl=True, oauth2_introspection_url=introspection.url) as dovecot:
                yield dovecot, tokens, introspection
        finally:
            introspection.close()


async def state(client: Any, account: dict[str, Any]) -> dict[str, Any]:
    return (await client.get(f"/v1/accounts/{account['id']}", headers=AUTH)).json()


async def activate(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    created = await client.post("/v1/accounts", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    return (
        await client.patch(f"/v1/accounts/{created.json()['id']}", json={"active": True}, headers=AUTH)
    ).json()


async def test_xoauth2_over_tls_and_starttls_with_verification(
    kafka_broker, unique, tmp_path, oauth_tls, monkeypatch
):
    dovecot, tokens, introspection = oauth_tls
    assert dovecot.cert_path is not None and dovecot.imaps_port is not None
    monkeypatch.setenv("SSL_CERT_FILE", str(dovecot.cert_path))  # trust the test CA, verification stays on
    oauth_folder, tls_folder = f"oauth-{unique.id}", f"starttls-{unique.id}"
    make_folder(dovecot, oauth_folder)
    make_folder(dovecot, tls_folder)
    settings = service_settings(kafka_broker, unique, tmp_path, **FAST)
    async with running(create_app, settings) as client:
        oauth = await activate(
            client,
            account_body(
                dovecot, oauth_folder, name="m365", port=dovecot.imaps_port, encryption="ssl",
                auth_type="oauth2", password=None, oauth_token_url=tokens.url,
                oauth_client_id="client", oauth_refresh_token=tokens.current,
            ),
        )  # fmt: skip
        starttls = await activate(
            client, account_body(dovecot, tls_folder, name="starttls", encryption="starttls")
        )
        assert oauth["verify_tls"] and starttls["verify_tls"]
        append(dovecot, oauth_folder, mail(sender="oauth@example.org", subject="Through XOAUTH2"))
        append(dovecot, tls_folder, mail(sender="tls@example.org", subject="Through STARTTLS"))
        [via_oauth] = await eventually(lambda: tickets(client, requester="oauth@example.org"), timeout=60)
        [via_tls] = await eventually(lambda: tickets(client, requester="tls@example.org"), timeout=60)
        assert (via_oauth["subject"], via_tls["subject"]) == ("Through XOAUTH2", "Through STARTTLS")
        # Dovecot checked exactly the access token our refresh produced
        assert tokens.calls and introspection.asked
        assert set(introspection.asked) <= {f"access-{n}" for n in range(1, len(tokens.calls) + 1)}
        assert (await state(client, oauth))["last_error"] in (None, "")


async def test_untrusted_certificate_is_refused_not_ignored(kafka_broker, unique, tmp_path, oauth_tls):
    dovecot, _tokens, _introspection = oauth_tls
    folder = f"untrusted-{unique.id}"
    make_folder(dovecot, folder)
    settings = service_settings(kafka_broker, unique, tmp_path, **FAST)
    async with running(create_app, settings) as client:
        account = await activate(
            client,
            account_body(dovecot, folder, name="self-signed", port=dovecot.imaps_port, encryption="ssl"),
        )
        append(dovecot, folder, mail(sender="never@example.org", subject="Must not be read"))

        async def failed() -> dict[str, Any] | None:
            found = await state(client, account)
            return found if found.get("last_error") else None

        errored = await eventually(failed, timeout=60)
        assert "CERTIFICATE_VERIFY_FAILED" in errored["last_error"] or "certificate" in errored["last_error"]
        assert await tickets(client, requester="never@example.org") == []
