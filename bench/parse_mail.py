"""Mail parsing throughput on one core: parse_message over real-world mail.

    uv run python bench/parse_mail.py [--seconds 5] [--corpus ../shared/corpus]

Uses every .eml/.box file of the shared corpus (zammad, sisimai, rt, ruby-mail, ...) when it
is there, else a small built-in mix; the last line is
``RESULT msgs_per_s=... mb_per_s=... messages=... avg_bytes=...``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from services.mail_scanner.parsing import parse_message

FALLBACK = [
    b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.com>\r\nTo: help@example.org\r\nSubject: Re: [TT1042] x\r\n"
    b"Message-ID: <a@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    + b"Danke!\r\n\r\nAm 01.01.2024 um 10:00 schrieb Hans <h@example.com>:\r\n> alt\r\n"
    * 20,
    b"From: MAILER-DAEMON@mx.example.net\r\nReturn-Path: <>\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\n"
    b"X-Failed-Recipients: gone@example.org\r\n\r\nThis is a permanent error.\r\n",
]


def load(corpus: Path) -> list[bytes]:
    if not corpus.is_dir():
        return FALLBACK
    files = [
        p for p in corpus.rglob("*") if p.is_file() and p.suffix in (".eml", ".box") and "mjml" not in str(p)
    ]
    return [p.read_bytes() for p in sorted(files)] or FALLBACK


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "corpus"
    )
    args = parser.parse_args()
    mails = load(args.corpus)
    for raw in mails:  # warm-up (imports, regex compilation, header cache)
        parse_message(raw)
    count = size = 0
    started = time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        for raw in mails:
            parse_message(raw)
            count += 1
            size += len(raw)
    elapsed = time.perf_counter() - started
    print(
        f"RESULT msgs_per_s={count / elapsed:.0f} mb_per_s={size / elapsed / 1e6:.2f} "
        f"messages={len(mails)} avg_bytes={sum(map(len, mails)) // len(mails)}"
    )


if __name__ == "__main__":
    main()
