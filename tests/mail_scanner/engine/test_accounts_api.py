"""Accounts, rules, dry-run, error folder, error state and OAuth2 refresh through the API,
against real Dovecot (and a tiny OAuth2 token endpoint on loopback)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs

import pytest
from sqlmodel import select

from services.mail_scanner import accounts
from services.mail_scanner.app import create_app
from services.mail_scanner.models import ScannerAccount
from services.mail_scanner.oauth import OAuthError, refresh
from shared.db import session_scope
from shared.secretbox import SecretBox
from tests.integration.harness import AUTH, eventually, running, service_settings
from tests.mail_scanner.engine.helpers import (
    FAST,
    MASTER_KEY,
    account_body,
    add_account,
    append,
    imap,
    mail,
    make_folder,
    tickets,
)

pytestmark = pytest.mark.timeout(180)


class TokenServer:
    """An OAuth2 token endpoint: accepts the current refresh token, rotates it every time."""

    def __init__(self) -> None:
        self.current = "refresh-0"
        self.calls: list[dict[str, list[str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                outer.calls.append(form)
                if form.get("refresh_token") != [outer.current]:
                    self._answer(400, {"error": "invalid_grant"})
                    return
                outer.current = f"refresh-{len(outer.calls)}"
                self._answer(
                    200,
                    {
                        "access_token": f"access-{len(outer.calls)}",
                        "expires_in": 3600,
                        "refresh_token": outer.current,
                    },
                )

            def _answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/tenant/oauth2/v2.0/token"

    def __enter__(self) -> TokenServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    with TokenServer() as server:
        yield server


def test_refresh_rotates_and_refuses(token_server):
    token = refresh(token_server.url, "client", "csecret", "refresh-0", None)
    assert token.access_token == "access-1" and token.refresh_token == "refresh-1" and token.fresh()
    assert token_server.calls[0]["grant_type"] == ["refresh_token"]
    assert token_server.calls[0]["client_secret"] == ["csecret"]
    with pytest.raises(OAuthError) as failure:
        refresh(token_server.url, "client", None, "refresh-0", None)  # the old one no longer works
    assert "invalid_grant" in str(failure.value) and "refresh-0" not in str(failure.value)


async def test_accounts_rules_dry_run_errors_and_isolation(
    kafka_broker, dovecot, unique, tmp_path, token_server
):
    settings = service_settings(kafka_broker, unique, tmp_path, scanner_max_message_bytes=20_000, **FAST)
    folder, other = f"api-{unique.id}", f"api2-{unique.id}"
    make_folder(dovecot, folder)
    make_folder(dovecot, other)
    async with running(create_app, settings) as client:
        # validation and secrets
        bad = await client.post(
            "/v1/accounts", json={**account_body(dovecot, folder), "password": None}, headers=AUTH
        )
        assert bad.status_code == 422
        created = await client.post(
            "/v1/accounts", json=account_body(dovecot, folder, name="main"), headers=AUTH
        )
        assert (
            created.status_code == 201 and created.json()["active"] is False and created.json()["verify_tls"]
        )
        assert dovecot.users["alice"] not in created.text
        account_id = created.json()["id"]
        listed = await client.get(f"/v1/accounts/{account_id}/folders", headers=AUTH)
        assert listed.status_code == 200 and folder in listed.json() and "INBOX" in listed.json()
        duplicate = await client.post(
            "/v1/accounts", json=account_body(dovecot, folder, name="main"), headers=AUTH
        )
        assert duplicate.status_code == 409

        # rules, with a dangerous regex refused
        refused = await client.put(
            f"/v1/accounts/{account_id}/rules",
            json=[
                {
                    "name": "x",
                    "conditions": [{"field": "subject", "operator": "regex", "value": "(a+)+$"}],
                    "actions": [{"type": "ignore"}],
                }
            ],
            headers=AUTH,
        )
        assert refused.status_code == 422
        rules = [
            {"name": "billing", "conditions": [{"field": "subject", "operator": "contains", "value": "invoice"}], "actions": [{"type": "set_fields", "category": "billing"}, {"type": "move", "folder": f"{folder}-billing"}]},
            {"name": "drop newsletters", "conditions": [{"field": "header", "header": "List-Id", "operator": "contains", "value": "news"}], "actions": [{"type": "ignore"}]},
        ]  # fmt: skip
        saved = await client.put(f"/v1/accounts/{account_id}/rules", json=rules, headers=AUTH)
        assert saved.status_code == 200 and [r["name"] for r in saved.json()] == [
            "billing",
            "drop newsletters",
        ]
        dry = await client.post(
            f"/v1/accounts/{account_id}/rules/dry-run", content=mail(subject="Invoice 7"), headers=AUTH
        )
        assert dry.status_code == 200, dry.text
        report = dry.json()
        assert report["matched_rule"] == "billing" and report["outcome"] == "ticket_created"
        assert (
            report["actions"]["fields"] == {"category": "billing"}
            and report["actions"]["move_to"] == f"{folder}-billing"
        )
        empty = await client.post(f"/v1/accounts/{account_id}/rules/dry-run", content=b"", headers=AUTH)
        assert empty.status_code == 422

        # a broken account (wrong password) and an OAuth2 account Dovecot cannot log in:
        # both show their error; the good account keeps working
        broken = await add_account(client, dovecot, other, name="broken", password="wrong")
        oauth = await add_account(
            client,
            dovecot,
            other,
            name="oauth",
            auth_type="oauth2",
            password=None,
            oauth_token_url=token_server.url,
            oauth_client_id="client",
            oauth_refresh_token="refresh-0",
        )
        await client.patch(f"/v1/accounts/{account_id}", json={"active": True}, headers=AUTH)
        append(
            dovecot,
            folder,
            mail(subject="Invoice 7"),
            mail(subject="News", headers={"List-Id": "<news.example.org>"}),
            mail(subject="Huge", body="x" * 30_000),
            mail(sender="after@example.org", subject="after"),
        )
        await eventually(lambda: tickets(client, requester="after@example.org"))
        [invoice] = await tickets(client, requester="customer@example.org")
        assert invoice["category"] == "billing" and invoice["subject"] == "Invoice 7"

        async def errors() -> list:
            return (await client.get(f"/v1/accounts/{account_id}/errors", headers=AUTH)).json()

        [error] = await eventually(errors)
        assert "too large" in error["reason"] and error["moved_to"] == "mailsvc-errors"

        def mailbox() -> dict[str, list[int]]:
            with imap(dovecot) as box:
                found = {}
                for name in (folder, f"{folder}-billing", "mailsvc-errors"):
                    if box.folder_exists(name):
                        box.select_folder(name, readonly=True)
                        found[name] = box.search("ALL")
                return found

        await eventually(
            lambda: len(mailbox().get(f"{folder}-billing", [])) == 1 and len(mailbox()[folder]) == 2
        )

        async def state(account: dict) -> dict:
            return (await client.get(f"/v1/accounts/{account['id']}", headers=AUTH)).json()

        failing = await eventually(lambda: _errored(state(broken)))
        assert "LoginError" in failing["last_error"] and "wrong" not in failing["last_error"]
        failing_oauth = await eventually(lambda: _errored(state(oauth)))
        assert "refresh-" not in failing_oauth["last_error"] and "access-" not in failing_oauth["last_error"]
        assert token_server.calls and token_server.current != "refresh-0"

        # the rotated refresh token was stored (encrypted) and is the one the endpoint now expects
        with session_scope(settings.service_database_url("mail_scanner")) as session:
            row = session.exec(select(ScannerAccount).where(ScannerAccount.name == "oauth")).one()
            assert "refresh-" not in (row.oauth_refresh_token_enc or "")
            assert (
                accounts.decrypt(SecretBox.from_string(MASTER_KEY), row.oauth_refresh_token_enc)
                == token_server.current
            )

        # deactivation stops scanning and shows as inactive
        off = await client.patch(f"/v1/accounts/{broken['id']}", json={"active": False}, headers=AUTH)
        assert off.json()["state"] == "inactive"


async def _errored(pending) -> dict | None:  # type: ignore[no-untyped-def]
    account = await pending
    return account if account["state"] == "error" and account["last_error"] else None
