from datetime import UTC, datetime, timedelta

from services.mass_mailer.contacts import apply_contact_message, is_suppressed
from shared.contracts import ContactOptedOut, ContactUpserted

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_upsert_then_stale_message_is_ignored():
    contact = apply_contact_message(None, ContactUpserted(contact_id="C", email="A@X.org", occurred_at=T0))
    assert contact is not None and contact.email == "a@x.org"
    stale = ContactUpserted(contact_id="C", email="old@x.org", occurred_at=T0 - timedelta(seconds=1))
    assert apply_contact_message(contact, stale) is None


def test_crm_upsert_never_clears_our_unsubscribe():
    contact = apply_contact_message(None, ContactUpserted(contact_id="C", email="a@x.org", occurred_at=T0))
    contact.unsubscribed = True
    later = ContactUpserted(contact_id="C", email="a@x.org", occurred_at=T0 + timedelta(days=1))
    contact = apply_contact_message(contact, later)
    assert is_suppressed(contact) == "unsubscribed"


def test_opt_out_suppresses():
    contact = apply_contact_message(None, ContactOptedOut(contact_id="C", occurred_at=T0))
    assert is_suppressed(contact) == "email_opt_out"
    assert is_suppressed(None) is None


def test_as_utc_treats_naive_values_as_utc_and_converts_others():
    from zoneinfo import ZoneInfo

    from shared.timeutil import as_utc

    assert as_utc(datetime(2026, 1, 1, 12)) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    berlin = datetime(2026, 1, 1, 13, tzinfo=ZoneInfo("Europe/Berlin"))
    assert as_utc(berlin) == T0.replace(hour=12) and as_utc(berlin).tzinfo is UTC
    assert as_utc(None) is None
