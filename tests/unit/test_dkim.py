"""DkimSigner: byte-identical to dkimpy's dkim.sign, verified by dkimpy, dual signatures, errors."""

from __future__ import annotations

import base64
import random
import re
import time
from email.parser import BytesHeaderParser
from unittest import mock

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.mail import dkim as ours
from shared.mail.compose import MailAddress, MailDraft, compose
from shared.mail.dkim import SIGNED_HEADERS, DkimAlgorithm, DkimError, DkimKey, DkimSigner, generate_key

DOMAIN = "example.com"
T = 1_795_000_000
DATE = b"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n"


@pytest.fixture(scope="module")
def rsa_key() -> DkimKey:
    return generate_key(DOMAIN, "rsa2026", DkimAlgorithm.RSA)


@pytest.fixture(scope="module")
def ed_key() -> DkimKey:
    return generate_key(DOMAIN, "ed2026", DkimAlgorithm.ED25519)


@pytest.fixture(scope="module")
def keys(rsa_key, ed_key) -> dict[DkimAlgorithm, DkimKey]:
    return {DkimAlgorithm.RSA: rsa_key, DkimAlgorithm.ED25519: ed_key}


def dkimpy_sign(message: bytes, key: DkimKey, timestamp: int) -> bytes:
    """The reference: dkimpy's own signer, same key, headers and timestamp."""
    if key.algorithm is DkimAlgorithm.RSA:
        private = key.private_pem
    else:  # dkimpy wants the base64 Ed25519 seed
        seed = serialization.load_pem_private_key(key.private_pem, None).private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        private = base64.b64encode(seed)
    present = {name.lower().encode() for name in BytesHeaderParser().parsebytes(message).keys()}
    with mock.patch("time.time", return_value=timestamp):
        return dkim.sign(
            message,
            key.selector.encode(),
            key.domain.encode(),
            private,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=b"rsa-sha256" if key.algorithm is DkimAlgorithm.RSA else b"ed25519-sha256",
            include_headers=[name for name in SIGNED_HEADERS if name in present],
            linesep=b"\r\n",
        )


def dns_for(*keys: DkimKey):
    records = {f"{key.dns_name()}.".encode(): key.dns_value().encode() for key in keys}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name, b"")

    return dnsfunc


def verifies(message: bytes, idx: int, dnsfunc) -> bool:
    """dkimpy's verdict on the idx-th DKIM-Signature (dkim.verify only checks the first)."""
    try:
        return dkim.DKIM(message).verify(idx=idx, dnsfunc=dnsfunc)
    except dkim.DKIMException:
        return False


def composed_multipart() -> bytes:
    draft = MailDraft(
        sender=MailAddress(email=f"news@{DOMAIN}", name="Nachrichten Ümlaut"),
        to=[MailAddress(email=f"reader{i}@example.org", name=f"Reader {i}") for i in range(8)],
        subject="Grüße aus Köln — ein Betreff, lang genug, um gefaltet zu werden " * 2,
        text="Hallo,\n\nText   mit  Leerzeichen \t \n" * 60 + "\n\n\n",
        html="<p>Hallo <b>Welt</b>  —  ñandú   </p>\n" * 250,
        headers={
            "List-Unsubscribe": f"<https://{DOMAIN}/u/a>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        references=[f"<ref{i}.{'x' * 40}@example.org>" for i in range(6)],
        in_reply_to="<ref5@example.org>",
    )
    return compose(draft, DOMAIN).as_bytes()


CORPUS: dict[str, bytes] = {
    "composed-multipart-20k": composed_multipart(),
    "8bit-utf8": (
        "From: Jörg <j@example.com>\r\nTo: Zoë <z@example.org>\r\nSubject: Grüße — ñandú\r\n".encode()
        + DATE
        + "\r\nÄrger über Öl, 東京\r\n".encode()
    ),
    "long-folded-headers": (
        b"From: a@example.com\r\nTo: "
        + b",\r\n\t".join(b"Person %d <p%d@example.org>" % (i, i) for i in range(40))
        + b"\r\nSubject: one  two\t\tthree\r\n   four \r\n\t five   \r\n"
        + DATE
        + b"References: "
        + b"\r\n ".join(b"<%d.%s@example.org>" % (i, b"y" * 60) for i in range(12))
        + b"\r\n\r\nbody\r\n"
    ),
    "whitespace-and-trailing-blank-lines": (
        b"From: a@example.com\r\nSubject: ws\r\n\r\n  lead\r\nmid  \t  dle \t\r\n\t\r\n  \r\ntext   \r\n\r\n \r\n\t\r\n\r\n\r\n"
    ),
    "empty-body": b"From: a@example.com\r\nSubject: empty\r\n" + DATE + b"\r\n",
    "only-blank-lines-body": b"From: a@example.com\r\n\r\n\r\n\r\n\r\n",
    "no-blank-line": b"From: a@example.com\r\nSubject: headers only\r\n",
    "no-final-crlf": b"From: a@example.com",
    "body-without-final-crlf": b"From: a@example.com\r\n\r\nlast line  ",
    "lf-line-endings": b"From: a@example.com\nSubject: lf  only\n  folded\n\nline one \nline two\n\n\n",
    "duplicate-headers": b"From: a@example.com\r\nSubject: first\r\nTo: x@example.org\r\nSubject: second\r\n\r\nb\r\n",
    "all-signed-headers": (
        b"Received: from x by y\r\nFrom: a@example.com\r\nTo: b@example.org\r\nCc: c@example.org\r\n"
        b"Bcc: hidden@example.org\r\nSubject: all\r\n" + DATE + b"Message-ID: <m@example.com>\r\n"
        b"Reply-To: r@example.com\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"In-Reply-To: <p@example.org>\r\nReferences: <p@example.org>\r\nList-Unsubscribe: <mailto:u@example.com>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nX-Mailer: mailsvc\r\n\r\nbody\r\n"
    ),
    "odd-header-spacing-and-case": (
        b"FROM:a@example.com\r\nsUbJeCt:no-space\r\nTo:   b@example.org   \r\nCc:\r\nX-Empty: \r\n\r\nb\r\n"
    ),
    "bare-cr-in-body": b"From: a@example.com\r\n\r\na \r b  \r \r\n",
}


@pytest.mark.parametrize("algorithm", list(DkimAlgorithm))
@pytest.mark.parametrize("name", list(CORPUS))
def test_byte_identical_to_dkimpy(keys, algorithm, name):
    key = keys[algorithm]
    message = CORPUS[name]
    expected = dkimpy_sign(message, key, T)
    assert DkimSigner([key]).signature_headers(message, timestamp=T) == expected
    assert ours.sign(message, key, timestamp=T) == expected


def test_the_corpus_message_is_a_20k_multipart():
    raw = CORPUS["composed-multipart-20k"]
    assert 15_000 < len(raw) < 30_000 and b"multipart/alternative" in raw


def random_message(rng: random.Random) -> bytes:
    def ws() -> str:
        return "".join(rng.choice(" \t") for _ in range(rng.choice([0, 0, 1, 1, 2, 5])))

    def text(words: int) -> str:
        return ws().join(
            rng.choice(["a", "Wort", "ü", "x=3D", "<b>", "—"]) + rng.choice(["", " "]) for _ in range(words)
        )

    lines = []
    names = ["From", "To", "Cc", "Subject", "X-Tag", "Date", "Reply-To", "Content-Type"]
    for name in [*rng.sample(names, k=5), "From"]:
        value = text(rng.randint(0, 6))
        for _ in range(rng.randint(0, 2)):
            value += rng.choice(["\r\n ", "\r\n\t", "\r\n  "]) + text(rng.randint(1, 4))
        lines.append(
            f"{rng.choice([name, name.lower(), name.upper()])}:{rng.choice(['', ' ', '  ', chr(9)])}{value}{ws()}"
        )
    body = [text(rng.randint(0, 12)) + ws() for _ in range(rng.randint(0, 30))]
    body += [ws() for _ in range(rng.randint(0, 4))]
    message = "\r\n".join(lines) + "\r\n\r\n" + "\r\n".join(body) + rng.choice(["", "\r\n", "\r\n\r\n"])
    return message.encode()


def test_byte_identical_to_dkimpy_on_random_messages(keys):
    rng = random.Random(6376)
    signers = {algorithm: DkimSigner([key]) for algorithm, key in keys.items()}
    for number in range(150):
        message = random_message(rng)
        algorithms = list(DkimAlgorithm) if number % 5 == 0 else [DkimAlgorithm.ED25519]
        for algorithm in algorithms:
            expected = dkimpy_sign(message, keys[algorithm], T + number)
            assert signers[algorithm].signature_headers(message, timestamp=T + number) == expected, message


@pytest.mark.parametrize("domain_length", [4, 20, 40, 50, 55, 58, 60, 62, 64, 65, 66])
@pytest.mark.parametrize("selector_length", [1, 10, 30, 60, 67])
def test_byte_identical_folding_for_every_name_length(ed_key, domain_length, selector_length):
    labels = [("d" * 60)[: max(domain_length - 4, 1)], "com"] if domain_length > 4 else ["e", "co"]
    domain = ".".join(labels)[:domain_length]
    selector = ("s" * 63 + ".sss")[:selector_length].strip(".")
    key = DkimKey(domain, selector, DkimAlgorithm.ED25519, ed_key.private_pem)
    message = CORPUS["all-signed-headers"]
    assert DkimSigner([key]).signature_headers(message, timestamp=T) == dkimpy_sign(message, key, T)


@pytest.mark.parametrize("bits", [1024, 3072, 4096])
def test_byte_identical_for_other_rsa_sizes(bits):
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = DkimKey(DOMAIN, "big", DkimAlgorithm.RSA, pem)
    message = CORPUS["8bit-utf8"]
    signed = DkimSigner([key]).sign(message, timestamp=T)
    assert signed == dkimpy_sign(message, key, T) + message
    assert dkim.verify(signed, dnsfunc=dns_for(key))


def test_sign_prepends_the_headers_and_returns_crlf(rsa_key):
    signer = DkimSigner([rsa_key])
    lf = CORPUS["lf-line-endings"]
    signed = signer.sign(lf, timestamp=T)
    assert signed == signer.signature_headers(lf, timestamp=T) + lf.replace(b"\n", b"\r\n")
    assert signed.count(b"\n") == signed.count(b"\r\n")
    assert dkim.verify(signed, dnsfunc=dns_for(rsa_key))


@pytest.mark.parametrize("order", ["rsa-first", "ed25519-first"])
def test_dual_signature_both_verify_with_dkimpy(rsa_key, ed_key, order):
    pair = [rsa_key, ed_key] if order == "rsa-first" else [ed_key, rsa_key]
    message = CORPUS["composed-multipart-20k"]
    signed = DkimSigner(pair).sign(message, timestamp=T)
    # Dual = the two single signatures, in the order of the keys, over the same message.
    singles = b"".join(DkimSigner([key]).signature_headers(message, timestamp=T) for key in pair)
    assert signed == singles + message
    tags = re.findall(rb"DKIM-Signature: v=1; a=([a-z0-9-]+);", signed)
    assert (
        tags == [b"rsa-sha256", b"ed25519-sha256"]
        if order == "rsa-first"
        else [b"ed25519-sha256", b"rsa-sha256"]
    )
    dns = dns_for(rsa_key, ed_key)
    assert verifies(signed, 0, dns) and verifies(signed, 1, dns)


@pytest.mark.parametrize("where", ["body", "subject", "from"])
def test_tampering_breaks_both_signatures(rsa_key, ed_key, where):
    signed = DkimSigner([rsa_key, ed_key]).sign(CORPUS["composed-multipart-20k"])
    tampered = {
        "body": signed.replace(b"Hallo", b"Hullo", 1),
        "subject": signed.replace(b"\r\nSubject: ", b"\r\nSubject: Re: ", 1),
        "from": signed.replace(b"news@example.com", b"ceo@example.com", 1),
    }[where]
    assert tampered != signed
    dns = dns_for(rsa_key, ed_key)
    assert verifies(signed, 0, dns) and verifies(signed, 1, dns)
    assert not verifies(tampered, 0, dns)
    assert not verifies(tampered, 1, dns)


def test_default_timestamp_is_now(ed_key):
    before = int(time.time())
    header = DkimSigner([ed_key]).signature_headers(CORPUS["8bit-utf8"])
    t = int(re.search(rb" t=(\d+);", header).group(1))
    assert before <= t <= int(time.time())


def test_compress_wsp_matches_the_rfc_regex():
    rng = random.Random(1)
    for _ in range(2000):
        data = bytes(rng.choice(b" \t\r\nab") for _ in range(rng.randint(0, 40)))
        assert ours._compress_wsp(data) == re.sub(rb"[\t ]+", b" ", data)


def test_reprs_show_no_key_material(rsa_key, ed_key):
    signer = DkimSigner([rsa_key, ed_key])
    assert repr(signer) == "DkimSigner(domain='example.com', keys=[rsa, ed25519])"
    assert "PRIVATE" not in repr(rsa_key) and "private_pem" not in repr(rsa_key)


def test_rejects_bad_key_sets(rsa_key, ed_key):
    other_rsa = generate_key("other.example", "s1", DkimAlgorithm.RSA)
    cases = {
        "at least one key": [],
        "at most one RSA": [rsa_key, DkimKey(DOMAIN, "s2", DkimAlgorithm.RSA, rsa_key.private_pem)],
        "same domain": [rsa_key, DkimKey("other.example", "s1", DkimAlgorithm.ED25519, ed_key.private_pem)],
        "not an ed25519 key": [DkimKey(DOMAIN, "s1", DkimAlgorithm.ED25519, other_rsa.private_pem)],
        "not an rsa key": [DkimKey(DOMAIN, "s1", DkimAlgorithm.RSA, ed_key.private_pem)],
        "not an unencrypted PEM": [DkimKey(DOMAIN, "s1", DkimAlgorithm.RSA, b"-----BEGIN nonsense")],
        "too long": [DkimKey("a" * 60 + ".abcdefg.com", "s1", DkimAlgorithm.RSA, rsa_key.private_pem)],
        "not a valid DNS name": [DkimKey("exa mple.com", "s1", DkimAlgorithm.RSA, rsa_key.private_pem)],
    }
    for reason, key_set in cases.items():
        with pytest.raises(DkimError, match=reason) as error:
            DkimSigner(key_set)
        assert "PRIVATE KEY" not in str(error.value)


def test_rejects_rsa_keys_of_odd_sizes():
    private = rsa.generate_private_key(public_exponent=65537, key_size=1536)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(DkimError, match="RSA key size"):
        DkimSigner([DkimKey(DOMAIN, "s1", DkimAlgorithm.RSA, pem)])


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"To: b@example.org\r\nSubject: x\r\n\r\nbody\r\n", "no From header"),
        (b"From: a@example.com\r\nBad Header: x\r\n\r\nbody\r\n", "malformed header line"),
        (b" folded: first\r\nFrom: a@example.com\r\n\r\nbody\r\n", "starts with a folded header line"),
    ],
)
def test_rejects_unsignable_messages(ed_key, message, reason):
    with pytest.raises(DkimError, match=reason):
        DkimSigner([ed_key]).sign(message)
