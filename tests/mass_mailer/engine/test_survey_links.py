"""Survey links: valid for the template's survey_valid_days from sending (blank = unlimited),
signed so that neither the contact nor the validity can be changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from services.mass_mailer.app import create_app
from services.mass_mailer.mailings import links
from services.mass_mailer.mailings.models import Mailing
from services.mass_mailer.templates.links import survey_valid_until
from shared.db import migrate, session_scope
from tests.integration.harness import running, service_settings

KEY = b"k" * 32
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_survey_token_round_trip():
    until = survey_valid_until(NOW, 30)
    token = links.make_survey_token(KEY, 7, "contact/ü 1", until)
    found = links.read_survey_token(KEY, token)
    assert found is not None
    assert (found.mailing_id, found.contact_id, found.valid_until) == (
        7,
        "contact/ü 1",
        NOW + timedelta(days=30),
    )
    assert not found.expired(NOW + timedelta(days=29, hours=23))
    assert found.expired(NOW + timedelta(days=30))


def test_unlimited_survey_never_expires():
    found = links.read_survey_token(KEY, links.make_survey_token(KEY, 7, "c1", survey_valid_until(NOW, None)))
    assert found is not None and found.valid_until is None
    assert not found.expired(NOW + timedelta(days=10_000))


def test_forged_or_extended_survey_tokens_are_refused():
    token = links.make_survey_token(KEY, 7, "c1", NOW)
    mailing, contact, until, mac = token.split(".")
    extended = f"{mailing}.{contact}.{int(until) + 86_400 * 365}.{mac}"
    other_contact = links.make_survey_token(KEY, 7, "c2", NOW).split(".")[1]
    for bad in (
        extended,
        f"{mailing}.{other_contact}.{until}.{mac}",
        f"8.{contact}.{until}.{mac}",
        links.make_survey_token(b"x" * 32, 7, "c1", NOW),
        links.make_token(KEY, 7, "c1"),  # an unsubscribe token is not a survey token
        "7.Yw.0.ü",
        "",
        "a.b.c.d",
    ):
        assert links.read_survey_token(KEY, bad) is None, bad


async def test_survey_endpoint_redirects_while_valid_and_closes_after(kafka_broker, unique, tmp_path):
    settings = service_settings(kafka_broker, unique, tmp_path, mailing_public_url="https://mail.example.com")
    key = links.link_key(settings)
    with_survey, without = seed_mailings(settings.service_database_url("mass_mailer"))
    async with running(create_app, settings) as client:
        valid = links.make_survey_token(key, with_survey, "c1", datetime.now(UTC) + timedelta(days=1))
        link = links.survey_link(settings.mailing_public_url, valid)
        response = await client.get(urlsplit(link).path)
        assert response.status_code == 303
        assert response.headers["location"] == "https://survey.example.org/s/42?lang=de"

        closed = links.make_survey_token(key, with_survey, "c1", datetime.now(UTC) - timedelta(seconds=1))
        response = await client.get(f"/m/survey/{closed}")
        assert response.status_code == 410
        assert "closed" in response.text

        forged = links.make_survey_token(b"not the key" * 3, with_survey, "c1", None)
        assert (await client.get(f"/m/survey/{forged}")).status_code == 404
        none = links.make_survey_token(key, without, "c1", None)
        assert (await client.get(f"/m/survey/{none}")).status_code == 404


def seed_mailings(url: str) -> tuple[int, int]:
    migrate("mass_mailer", url)
    with session_scope(url) as session:
        rows = [
            Mailing(
                name="with",
                target_group_id="g",
                template_id=1,
                survey_url="https://survey.example.org/s/42?lang=de",
            ),
            Mailing(name="without", target_group_id="g", template_id=1),
        ]
        session.add_all(rows)
        session.flush()
        return rows[0].id or 0, rows[1].id or 0
