"""Sender identities and DKIM keys through the HTTP API, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from services.mass_mailer.app import create_app
from shared.apikeys import create_api_key
from shared.db import get_engine, migrate, session_scope
from shared.secretbox import generate_master_key
from shared.settings import Settings

RELAY_PASSWORD = "s3cret-relay-pw-4711"


@pytest.fixture
def api(db_url, tmp_path):
    settings = Settings(data_dir=tmp_path / "var", database_url=db_url, master_key=generate_master_key())
    migrate("mass_mailer", db_url)
    with session_scope(db_url) as session:
        _, admin = create_api_key(session, "admin", ["senders:read", "senders:write"])
        _, reader = create_api_key(session, "reader", ["senders:read"])
    client = TestClient(create_app(settings).http)
    client.headers["X-API-Key"] = admin
    client.reader_key = reader  # type: ignore[attr-defined]
    return client


def identity(**overrides):
    body = {
        "name": "Support",
        "email": "support@example.com",
        "display_name": "Example Support",
        "is_default": True,
        "relay": {
            "host": "smtp.relay.example.net",
            "port": 587,
            "tls": "starttls",
            "auth": "plain",
            "username": "apiuser",
            "secret": RELAY_PASSWORD,
        },
        "dkim_domain": "example.com",
    }
    body.update(overrides)
    return body


def test_create_list_update_delete_and_secrets_never_come_back(api, db_url):
    created = api.post("/v1/sender-identities", json=identity())
    assert created.status_code == 201, created.text
    out = created.json()
    assert out["relay"]["has_secret"] is True and RELAY_PASSWORD not in created.text
    assert api.post("/v1/sender-identities", json=identity()).status_code == 409

    second = api.post("/v1/sender-identities", json=identity(name="News", email="news@example.com")).json()
    listed = api.get("/v1/sender-identities", headers={"X-API-Key": api.reader_key})
    assert listed.status_code == 200 and RELAY_PASSWORD not in listed.text
    assert [i["is_default"] for i in listed.json()] == [False, True]  # only one default

    patched = api.patch(f"/v1/sender-identities/{out['id']}", json={"display_name": "Help Desk"})
    assert patched.json()["display_name"] == "Help Desk" and patched.json()["relay"]["has_secret"]
    with get_engine(db_url).connect() as connection:
        stored = connection.execute(text("SELECT relay_secret FROM mm_sender_identity")).scalars().all()
    assert all(s and RELAY_PASSWORD not in s for s in stored)

    assert api.patch(f"/v1/sender-identities/{second['id']}", json={"name": None}).status_code == 422
    assert api.delete(f"/v1/sender-identities/{second['id']}").status_code == 204
    assert api.get(f"/v1/sender-identities/{second['id']}").status_code == 404
    assert (
        api.post(
            "/v1/sender-identities", headers={"X-API-Key": api.reader_key}, json=identity(name="x")
        ).status_code
        == 403
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"display_name": "Evil\r\nBcc: victim@example.org"},
        {"email": "not-an-address"},
        {"relay": {"host": "smtp.example.net\r\nX: y"}},
        {"relay": {"host": "smtp.example.net", "auth": "plain"}},
        {"dkim_domain": "exa mple.com"},
    ],
)
def test_hostile_or_incomplete_identities_are_rejected(api, bad):
    reply = api.post("/v1/sender-identities", json=identity(**bad))
    assert reply.status_code == 422, reply.text


def test_dkim_keys_and_dns_records(api):
    rsa = api.post("/v1/dkim-keys", json={"domain": "Example.com", "selector": "s2026", "algorithm": "rsa"})
    ed = api.post(
        "/v1/dkim-keys", json={"domain": "example.com", "selector": "e2026", "algorithm": "ed25519"}
    )
    assert rsa.status_code == ed.status_code == 201
    assert "PRIVATE" not in rsa.text and "private_key" not in rsa.json()
    assert rsa.json()["dns_record"]["name"] == "s2026._domainkey.example.com"
    assert api.post("/v1/dkim-keys", json={"domain": "example.com", "selector": "s2026"}).status_code == 409
    assert (
        api.post("/v1/dkim-keys", json={"domain": "example.com", "selector": "bad selector"}).status_code
        == 422
    )
    too_long = "a" * 60 + ".example.com"
    assert api.post("/v1/dkim-keys", json={"domain": too_long, "selector": "s1"}).status_code == 422

    ident = api.post("/v1/sender-identities", json=identity()).json()
    records = api.get(f"/v1/sender-identities/{ident['id']}/dns-records").json()
    by_name = {r["name"]: r for r in records}
    assert by_name["s2026._domainkey.example.com"]["value"].startswith("v=DKIM1; k=rsa; p=")
    assert by_name["e2026._domainkey.example.com"]["value"].startswith("v=DKIM1; k=ed25519; p=")
    assert by_name["example.com"]["value"].startswith("v=spf1 include:example.net")
    assert by_name["_dmarc.example.com"]["value"].startswith("v=DMARC1; p=none")
    listed = api.get("/v1/dkim-keys", params={"domain": "example.com"}).json()
    assert sorted(k["selector"] for k in listed) == ["e2026", "s2026"]
