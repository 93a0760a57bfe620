"""Secrets never reach the logs: every log record of this session is captured (see conftest.py and
logcapture.py) and grepped, as the very last tests of the run, for every test secret.

Registered secrets: the harness API key secret and every key the suite creates, the master keys,
link secrets, the dovecot passwords, SMTP AUTH passwords (right and wrong), DKIM private key PEM
lines, OAuth refresh tokens, client secrets and access tokens. Before the grep, the secret-handling
paths are exercised on purpose, including their failures: relay AUTH with a wrong password, IMAP
login with a wrong password, an OAuth token endpoint that refuses (and echoes the token back) and
one whose access token the IMAP server refuses.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from sqlmodel import select

from services.mail_scanner.app import create_app as create_scanner
from services.mass_mailer.app import create_app as create_mailer
from services.mass_mailer.models import DkimKeyRecord
from shared.db import session_scope
from shared.secretbox import SecretBox
from tests.integration.harness import AUTH, eventually
from tests.mail_scanner.engine.helpers import account_body, make_folder
from tests.reliability import logcapture
from tests.reliability.hostile_support import Running, fleet
from tests.servers.smtp import SmtpSink

pytestmark = pytest.mark.timeout(300)

RELAY_USER = "relayuser"
RELAY_PASSWORD = "relay-pass-4b7c1d9e"
WRONG_RELAY_PASSWORD = "wrong-relay-pass-93af"
WRONG_IMAP_PASSWORD = "wrong-imap-pass-c81d"
REFRESH_TOKEN = "refresh-token-5e2a7b61c0"
CLIENT_SECRET = "client-secret-0d4f8a3b"
ACCESS_TOKEN = "access-token-7719be0c2a"
for value, what in (
    (RELAY_PASSWORD, "the SMTP AUTH password"),
    (WRONG_RELAY_PASSWORD, "a wrong SMTP AUTH password"),
    (WRONG_IMAP_PASSWORD, "a wrong IMAP password"),
    (REFRESH_TOKEN, "an OAuth refresh token"),
    (CLIENT_SECRET, "an OAuth client secret"),
    (ACCESS_TOKEN, "an OAuth access token"),
):
    logcapture.register_secret(value, what)


class TokenEndpoint(BaseHTTPRequestHandler):
    """/refuse answers 400 and echoes the refresh token back; /grant hands out ACCESS_TOKEN."""

    def do_POST(self) -> None:
        form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
        if self.path == "/grant":
            status, body = 200, {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 3600}
        else:
            echoed = form.get("refresh_token", [""])[0]
            status, body = 400, {"error": "invalid_grant", "error_description": f"token {echoed} was revoked"}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def token_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
async def services(kafka_broker, tmp_path_factory) -> AsyncIterator[tuple[dict[str, Running], SmtpSink]]:
    sink = SmtpSink(users={RELAY_USER: RELAY_PASSWORD})
    sink.start()
    try:
        async with fleet(
            {"mass_mailer": create_mailer, "mail_scanner": create_scanner},
            kafka_broker,
            tmp_path_factory.mktemp("secrets"),
            smtp_host=sink.host,
            smtp_port=sink.port,
            smtp_username=RELAY_USER,
            smtp_password=RELAY_PASSWORD,
            gateway_retry_base_s=0.2,
            gateway_retry_max_s=0.5,
            gateway_sweep_interval_s=0.2,
            scanner_claim_interval_s=0.2,
            scanner_poll_interval_s=0.5,
            log_level="DEBUG",
        ) as running:
            yield running, sink
    finally:
        sink.stop()


async def _status(client: Any, correlation: str, *wanted: str) -> dict | None:
    row = (await client.get(f"/v1/transactional/{correlation}", headers=AUTH)).json()
    return row if row.get("status") in wanted else None


async def test_exercise_the_secret_handling_paths(
    services: tuple[dict[str, Running], SmtpSink], dovecot, token_endpoint: str, unique
) -> None:
    (running, sink), scanner = services, services[0]["mail_scanner"]
    mailer = running["mass_mailer"]
    client = mailer.client
    logcapture.register_secret(dovecot.users["alice"], "the dovecot password of alice")
    logcapture.register_secret(dovecot.users["bob"], "the dovecot password of bob")

    # DKIM: a key made by the service, its PEM lines registered, a signed mail sent with it.
    key = await client.post("/v1/dkim-keys", headers=AUTH, json={"domain": "example.com", "selector": "s1"})
    assert key.status_code == 201, key.text
    assert "PRIVATE KEY" not in key.text
    with session_scope(mailer.app.service.database_url) as session:
        box = SecretBox.from_settings(mailer.settings)
        for row in session.exec(select(DkimKeyRecord)).all():
            logcapture.register_pem(box.decrypt(row.private_key), "a DKIM private key")
    relay = {"host": sink.host, "port": sink.port, "tls": "none", "auth": "plain", "username": RELAY_USER}
    for name, secret in (("good", RELAY_PASSWORD), ("bad", WRONG_RELAY_PASSWORD)):
        identity = {"name": name, "email": f"{name}@example.com", "dkim_domain": "example.com",
                    "relay": {**relay, "secret": secret}}  # fmt: skip
        created = await client.post("/v1/sender-identities", headers=AUTH, json=identity)
        assert created.status_code == 201, created.text
        assert secret not in created.text
        body = {"correlation_id": f"sec-{name}", "to": ["rcpt@example.org"], "subject": "s", "text": "t",
                "sender_identity": name}  # fmt: skip
        assert (await client.post("/v1/transactional", headers=AUTH, json=body)).status_code == 202
    await eventually(lambda: _status(client, "sec-good", "sent"), timeout=60)
    await eventually(lambda: _status(client, "sec-bad", "deferred", "failed"), timeout=60)
    # The wrong password never rides on the good identity's authenticated connection.
    assert not [m for m in sink.messages if m.mail_from == "bad@example.com"]
    assert {a.secret for a in sink.auth_attempts} >= {RELAY_PASSWORD.encode(), WRONG_RELAY_PASSWORD.encode()}

    # IMAP: a wrong password, and OAuth2 with a refusing and a granting token endpoint.
    folder = f"secrets-{unique.id}"
    make_folder(dovecot, folder)
    accounts = {
        "wrong-password": account_body(dovecot, folder, password=WRONG_IMAP_PASSWORD),
        "right-password": account_body(dovecot, folder),
        "oauth-refused": account_body(
            dovecot, folder, auth_type="oauth2", password=None, oauth_token_url=f"{token_endpoint}/refuse",
            oauth_client_id="client", oauth_client_secret=CLIENT_SECRET, oauth_refresh_token=REFRESH_TOKEN,
        ),
        "oauth-granted": account_body(
            dovecot, folder, auth_type="oauth2", password=None, oauth_token_url=f"{token_endpoint}/grant",
            oauth_client_id="client", oauth_client_secret=CLIENT_SECRET, oauth_refresh_token=REFRESH_TOKEN,
        ),
    }  # fmt: skip
    ids = {}
    for name, body in accounts.items():
        created = await scanner.client.post("/v1/accounts", headers=AUTH, json={**body, "name": name})
        assert created.status_code == 201, created.text
        for secret in (WRONG_IMAP_PASSWORD, dovecot.users["alice"], REFRESH_TOKEN, CLIENT_SECRET):
            assert secret not in created.text
        ids[name] = created.json()["id"]
        activated = await scanner.client.patch(
            f"/v1/accounts/{ids[name]}", headers=AUTH, json={"active": True}
        )
        assert activated.status_code == 200, activated.text

    async def state(name: str, *wanted: str) -> dict | None:
        row = (await scanner.client.get(f"/v1/accounts/{ids[name]}", headers=AUTH)).json()
        return row if row["state"] in wanted else None

    for name in ("wrong-password", "oauth-refused", "oauth-granted"):
        row = await eventually(lambda n=name: state(n, "error"), timeout=90)
        assert row["last_error"], row
        for secret in (WRONG_IMAP_PASSWORD, REFRESH_TOKEN, CLIENT_SECRET, ACCESS_TOKEN):
            assert secret not in json.dumps(row), (name, row)
    await eventually(lambda: state("right-password", "idle", "polling"), timeout=90)
    logging.getLogger("tests.reliability").info("secret-handling paths exercised")


def test_no_secret_in_any_captured_log_record() -> None:
    """Runs last (conftest moves it): the records of every test before it are in CAPTURED."""
    assert logcapture.CAPTURED, "the log capture saw nothing: is it installed?"
    # The grep itself works: a line holding a registered secret is found.
    canary = next(iter(logcapture.SECRETS))
    assert logcapture.leaks([f"x {canary} y"])
    found = logcapture.leaks()
    print(
        f"\nRESULT log_records={len(logcapture.CAPTURED)} secrets={len(logcapture.SECRETS)} leaks={len(found)}"
    )
    assert not found, "\n".join(f"{what}: {line}" for what, line in found[:20])
