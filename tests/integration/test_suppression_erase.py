"""GDPR erase keeps an address blocked: the suppression (a list entry or a flag on the contact)
outlives the contact as a SHA-256 of the address only; the bulk sender's and the gateway's
checks still find it when the address comes back; lifting the block through the API removes it.
On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from services.mass_mailer import outbound_store, suppression
from services.mass_mailer.app import create_app
from services.mass_mailer.audience.store import erase_contact
from services.mass_mailer.mailings.store import suppressed_addresses
from services.mass_mailer.models import Contact, Suppression
from shared.apikeys import create_api_key
from shared.db import migrate, session_scope
from shared.secretbox import generate_master_key
from shared.settings import Settings


@pytest.fixture
def url(db_url: str) -> str:
    migrate("mass_mailer", db_url)
    return db_url


def rows(url: str) -> dict[str, str]:
    with session_scope(url) as session:
        return {r.email: r.reason for r in session.exec(select(Suppression)).all()}


def test_an_erased_contacts_block_is_kept_as_a_hash_only(url):
    with session_scope(url) as session:
        session.add(Contact(contact_id="c1", email="anna@example.org", unsubscribed=True))
        session.add(Suppression(email="anna@example.org", reason="unsubscribed"))
        session.add(Contact(contact_id="c2", email="ben@example.org", bounced=True))  # flag only
        session.add(Contact(contact_id="c3", email="cleo@example.org"))  # nothing to keep
    with session_scope(url) as session:
        assert erase_contact(session, "c1") and erase_contact(session, "c2") and erase_contact(session, "c3")

    kept = rows(url)
    assert kept == {
        suppression.hashed("anna@example.org"): "unsubscribed",
        suppression.hashed("ben@example.org"): "bounced",
    }
    assert not any("@" in key for key in kept)  # no address left in the table

    with session_scope(url) as session:  # the addresses come back, e.g. in a CRM import
        for cid, email in (("n1", "anna@example.org"), ("n2", "ben@example.org"), ("n3", "cleo@example.org")):
            session.add(Contact(contact_id=cid, email=email))
    with session_scope(url) as session:
        everyone = ["anna@example.org", "ben@example.org", "cleo@example.org"]
        assert suppressed_addresses(session, everyone) == {"anna@example.org", "ben@example.org"}
        assert outbound_store.suppressed(session, ["Anna@Example.org", "cleo@example.org"]) == {
            "Anna@Example.org": "unsubscribed"
        }
        many = [f"x{i}@example.org" for i in range(20)] + ["ben@example.org"]  # the IN-list path
        assert outbound_store.suppressed(session, many) == {"ben@example.org": "bounced"}


def test_lifting_the_block_also_removes_the_hashed_entry(url, tmp_path):
    with session_scope(url) as session:
        session.add(Contact(contact_id="c1", email="anna@example.org"))
        session.add(Suppression(email="anna@example.org", reason="complained"))
    with session_scope(url) as session:
        erase_contact(session, "c1")
        _, key = create_api_key(session, "admin", ["senders:write"])
    settings = Settings(data_dir=tmp_path / "var", database_url=url, master_key=generate_master_key())
    client = TestClient(create_app(settings).http)
    client.headers["X-API-Key"] = key
    assert client.delete("/v1/suppressions/Anna@Example.org").status_code == 204
    assert rows(url) == {}
    assert client.delete("/v1/suppressions/anna@example.org").status_code == 404
