"""DKIM signing throughput on one core: DkimSigner (RSA-2048, Ed25519, dual) vs stock dkimpy RSA.

    uv run python bench/dkim_sign.py [--seconds 3] [--breakdown]

The message is a ~20 KB multipart/alternative (text + HTML, quoted-printable) built by the
project's composer. Each case warms up, then runs for a time budget; the last line is
``RESULT rsa_per_s=... ed25519_per_s=... dual_per_s=... dkimpy_rsa_per_s=...``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Callable
from unittest import mock

import dkim

from shared.mail import dkim as ours
from shared.mail.compose import MailAddress, MailDraft, compose
from shared.mail.dkim import SIGNED_HEADERS, DkimAlgorithm, DkimSigner, generate_key

DOMAIN = "example.com"


def bench_message() -> bytes:
    paragraph = "Liebe Kundin, lieber Kunde — hier   sind die Neuigkeiten des Monats (ñandú, Grüße). "
    html = "".join(
        f'<tr>\n  <td style="padding: 8px; color: #333">{paragraph}<a href="https://{DOMAIN}/a/{i}">mehr</a></td>\n</tr>\n'
        for i in range(60)
    )
    draft = MailDraft(
        sender=MailAddress(email=f"news@{DOMAIN}", name="Newsletter"),
        to=[MailAddress(email="reader@example.org", name="Leserin")],
        subject="Ihr Newsletter für November: Neuigkeiten, Termine und Angebote",
        text=(paragraph + "\n") * 60,
        html=f"<html><body><table>\n{html}</table></body></html>",
        headers={
            "List-Unsubscribe": f"<https://{DOMAIN}/u/abc>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    return compose(draft, DOMAIN).as_bytes()


def rate(fn: Callable[[], object], seconds: float, warmup: float) -> float:
    """Calls per second of ``fn`` over ``seconds`` after ``warmup`` seconds of calls."""
    for budget, measured in ((warmup, False), (seconds, True)):
        calls = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < budget:
            for _ in range(20):
                fn()
            calls += 20
        if measured:
            return calls / elapsed
    raise AssertionError("unreachable")


def breakdown(message: bytes, signer: DkimSigner, seconds: float) -> None:
    """Microseconds per call of each step of one RSA signature (private helpers, bench only)."""
    headers, body = ours._parse(message)
    canonical_body = ours._relaxed_body(body)
    rsa_key = signer._signers[0]._private
    digest = hashlib.sha256(b"x").digest()
    names = {name.lower() for name, _ in headers}
    signed = [name for name in SIGNED_HEADERS if name in names]
    steps: dict[str, Callable[[], object]] = {
        "whole sign()": lambda: signer.sign(message),
        "CRLF check": lambda: ours._crlf(message),
        "parse headers/body": lambda: ours._parse(message),
        "relaxed body": lambda: ours._relaxed_body(body),
        "sha256 body": lambda: hashlib.sha256(canonical_body).digest(),
        "relaxed signed headers": lambda: [ours._relaxed_header(ours._last(headers, n)) for n in signed],
        "RSA-2048 PKCS#1 v1.5 (OpenSSL)": lambda: rsa_key.sign(
            digest, ours.padding.PKCS1v15(), ours._PREHASHED_SHA256
        ),
    }
    for name, fn in steps.items():
        print(f"  {name:34s} {1e6 / rate(fn, seconds / 4, 0.05):8.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per case")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up time per case")
    parser.add_argument("--breakdown", action="store_true", help="also time each step of an RSA signature")
    args = parser.parse_args()

    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})  # one core: the figures are per core
    message = bench_message()
    rsa = generate_key(DOMAIN, "rsa2026", DkimAlgorithm.RSA)
    ed = generate_key(DOMAIN, "ed2026", DkimAlgorithm.ED25519)
    signers = {"rsa": DkimSigner([rsa]), "ed25519": DkimSigner([ed]), "dual": DkimSigner([rsa, ed])}
    present = {name.lower() for name, _ in ours._parse(message)[0]}
    headers = [name for name in SIGNED_HEADERS if name in present]

    def dkimpy_rsa() -> bytes:
        return dkim.sign(
            message, b"rsa2026", DOMAIN.encode(), rsa.private_pem,
            canonicalize=(b"relaxed", b"relaxed"), include_headers=headers, linesep=b"\r\n",
        )  # fmt: skip

    with mock.patch("time.time", return_value=1_795_000_000):
        assert signers["rsa"].signature_headers(message) == dkimpy_rsa(), "not byte-identical to dkimpy"

    print(f"message: {len(message)} bytes, {len(headers)} signed headers; CPU {cpu}; {args.seconds} s/case")
    results = {f"{name}_per_s": rate(lambda s=signer: s.sign(message), args.seconds, args.warmup)
               for name, signer in signers.items()}  # fmt: skip
    results["dkimpy_rsa_per_s"] = rate(dkimpy_rsa, args.seconds, args.warmup)
    for name, per_s in results.items():
        print(f"  {name.removesuffix('_per_s'):12s} {per_s:9.0f} signatures/s  {1e6 / per_s:8.1f} us each")
    if args.breakdown:
        print("RSA signature, step by step:")
        breakdown(message, signers["rsa"], args.seconds)
    print("RESULT " + " ".join(f"{name}={per_s:.0f}" for name, per_s in results.items()))


if __name__ == "__main__":
    main()
