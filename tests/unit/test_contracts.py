import json

import pytest
from pydantic import TypeAdapter, ValidationError

from shared.contracts import ContactMessage, ContactOptedOut, ContactUpserted, OutboundEmail

contact_adapter: TypeAdapter = TypeAdapter(ContactMessage)


def test_contact_messages_are_discriminated_by_kind():
    upsert = contact_adapter.validate_json(
        json.dumps({"kind": "contact.upserted", "contact_id": "C1", "email": "A@Example.com"})
    )
    assert isinstance(upsert, ContactUpserted)
    opt_out = contact_adapter.validate_json(json.dumps({"kind": "contact.opted_out", "contact_id": "C1"}))
    assert isinstance(opt_out, ContactOptedOut)


@pytest.mark.parametrize(
    "payload",
    [
        {"kind": "contact.upserted", "contact_id": "C1", "schema_version": 2},
        {"kind": "contact.deleted", "contact_id": "C1"},
        {"kind": "contact.upserted", "contact_id": "C1", "unknown_field": 1},
        {"kind": "contact.upserted", "contact_id": "C1", "email": "not-an-address"},
        {"kind": "contact.upserted", "contact_id": "x" * 101},
        {"kind": "contact.upserted", "contact_id": "C1", "first_name": "y" * 501},
    ],
)
def test_bad_contact_messages_are_rejected(payload):
    with pytest.raises(ValidationError):
        contact_adapter.validate_json(json.dumps(payload))


def test_outbound_email_needs_a_body_and_valid_header_names():
    with pytest.raises(ValidationError, match="one of text, html or template_id"):
        OutboundEmail(correlation_id="c", to=["a@example.com"])
    with pytest.raises(ValidationError):
        OutboundEmail(correlation_id="c", to=["a@example.com"], text="x", headers={"Bad Name": "v"})
    ok = OutboundEmail(correlation_id="c", to=["a@example.com"], text="x", headers={"X-Tag": "v"})
    assert OutboundEmail.model_validate_json(ok.model_dump_json()) == ok


def test_test_domains_are_accepted_and_domains_normalised():
    message = OutboundEmail(correlation_id="c", to=["someone@example.test", "Ops@Mail.Example.COM"], text="x")
    assert message.to == ["someone@example.test", "Ops@mail.example.com"]
    for bad in ("a@b@c", "nobody@localhost", "x@host.invalid", "no-at-sign"):
        with pytest.raises(ValidationError):
            OutboundEmail(correlation_id="c", to=[bad], text="x")
