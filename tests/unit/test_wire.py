"""CrlfMessage: what the composer builds keeps its promise through signing, and plain bytes are
still checked (and normalised) by the signer and the SMTP client."""

from __future__ import annotations

from datetime import UTC, datetime

import dkim as dkimpy
import pytest

from shared.mail import fastmime
from shared.mail.compose import CompositionError, MailAddress
from shared.mail.dkim import DkimAlgorithm, DkimSigner, generate_key
from shared.mail.smtp import encode_data
from shared.mail.wire import CrlfMessage, crlf_only


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"a\r\nb\r\n", True),
        (b"", True),
        (b"a\nb\r\n", False),
        (b"a\rb\r\n", False),
        (b"a\n\rb", False),
        (b"a\r\n\rb", False),
    ],
)
def test_crlf_only(raw: bytes, expected: bool) -> None:
    assert crlf_only(raw) is expected


def built(extra_headers: bytes = b"") -> bytes:
    return fastmime.build(
        sender=MailAddress(email="news@example.com", name="News"),
        to=MailAddress(email="anna@example.org", name="Anna"),
        reply_to=None,
        subject="Hallo",
        text="Zeile 1\nZeile 2\r\n.dot\r",
        html="<p>\n  Grüße\r\n</p>",
        message_id="<bulk.1.1@mail.example.com>",
        date=datetime.now(UTC),
        extra_headers=extra_headers,
    )


def test_the_composer_builds_crlf_messages_and_signing_keeps_them() -> None:
    raw = built(b"List-Unsubscribe: <https://u.example/x>\r\n")
    assert isinstance(raw, CrlfMessage)
    assert raw.count(b"\r\n") == raw.count(b"\n") == raw.count(b"\r")
    key = generate_key("example.com", "s1", DkimAlgorithm.RSA)
    signed = DkimSigner([key]).sign(raw)
    assert isinstance(signed, CrlfMessage) and crlf_only(bytes(signed))
    assert dkimpy.verify(bytes(signed), dnsfunc=lambda name, timeout=5: key.dns_value().encode())
    payload, size = encode_data(signed)
    assert b"\r\n..dot\r\n" in payload and size == len(signed)  # dot-stuffed all the same


def test_plain_bytes_are_still_normalised() -> None:
    key = generate_key("example.com", "s1", DkimAlgorithm.RSA)
    signed = DkimSigner([key]).sign(b"From: a@example.com\nSubject: x\n\nbody\n")
    assert not isinstance(signed, CrlfMessage) and b"\r\n\r\nbody\r\n" in signed
    payload, _size = encode_data(b"From: a@example.com\n\nbody")
    assert payload == b"From: a@example.com\r\n\r\nbody\r\n"


@pytest.mark.parametrize("extra", [b"X-A: 1", b"X-A: 1\nX-B: 2\r\n", b"X-A: 1\r\n\rX-B: 2\r\n"])
def test_extra_headers_must_be_crlf_lines(extra: bytes) -> None:
    with pytest.raises(CompositionError, match="CRLF"):
        built(extra)
