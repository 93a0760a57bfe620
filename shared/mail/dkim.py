"""DKIM keys and signatures (dkimpy, relaxed/relaxed)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from enum import StrEnum

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"mime-version",
    b"content-type",
    b"in-reply-to",
    b"references",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)


class DkimAlgorithm(StrEnum):
    RSA = "rsa"
    ED25519 = "ed25519"


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: DkimAlgorithm
    private_pem: bytes

    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def dns_value(self) -> str:
        return dns_txt_value(self.private_pem, self.algorithm)


def validate_dns_label(value: str, what: str) -> str:
    labels = value.rstrip(".").split(".")
    if not value or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{what} {value!r} is not a valid DNS name")
    return value.rstrip(".").lower()


def generate_key(domain: str, selector: str, algorithm: DkimAlgorithm) -> DkimKey:
    domain = validate_dns_label(domain, "domain")
    selector = validate_dns_label(selector, "selector")
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm is DkimAlgorithm.RSA:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    return DkimKey(domain, selector, algorithm, pem)


def dns_txt_value(private_pem: bytes, algorithm: DkimAlgorithm) -> str:
    """The TXT record value to publish at ``<selector>._domainkey.<domain>``."""
    private = serialization.load_pem_private_key(private_pem, password=None)
    if algorithm is DkimAlgorithm.RSA:
        public_der = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"v=DKIM1; k=rsa; p={base64.b64encode(public_der).decode()}"
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"


def _dkimpy_private_key(key: DkimKey) -> bytes:
    if key.algorithm is DkimAlgorithm.RSA:
        return key.private_pem
    # dkimpy wants the raw 32-byte Ed25519 seed, base64-encoded.
    private = serialization.load_pem_private_key(key.private_pem, password=None)
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(seed)


def sign(message: bytes, key: DkimKey) -> bytes:
    """The DKIM-Signature header line (with CRLF) for ``message``; prepend it to send."""
    present = {
        line.split(b":", 1)[0].strip().lower()
        for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        if b":" in line and not line[:1].isspace()
    }
    headers = [h for h in SIGNED_HEADERS if h in present]
    return dkim.sign(
        message,
        key.selector.encode(),
        key.domain.encode(),
        _dkimpy_private_key(key),
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=b"rsa-sha256" if key.algorithm is DkimAlgorithm.RSA else b"ed25519-sha256",
        include_headers=headers,
        linesep=b"\r\n",
    )
