"""Hostile input: random and mutated MIME never makes parse_message raise; the CLI contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.mail_scanner.parsing import parse_message

SEED = (
    b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.com>\r\nTo: a@example.org\r\nSubject: Re: [TT1042] x\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=FC=DFe\r\n"
    b"--XX\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner \xe4\xf6\r\nMessage-ID: <r\xe4w@x>\r\n\r\nbody\r\n"
    b'--XX\r\nContent-Type: application/pdf; name="a.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n--XX--\r\n'
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2_000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    parse_message(raw).model_dump_json(by_alias=True)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(SEED) - 1), st.binary(min_size=0, max_size=8)), max_size=12))
def test_mutated_mime_never_raises(mutations: list[tuple[int, bytes]]) -> None:
    raw = bytearray(SEED)
    for position, chunk in mutations:
        raw[position : position + len(chunk)] = chunk
    parse_message(bytes(raw)).model_dump_json(by_alias=True)


TOKENS = [b"\r\n", b"--XX", b"=?utf-8?b?", b"?=", b"\xff\xfe", b"\x00", b"begin 644 x\r\n", b"<", b"@",
          b"Content-Type: message/rfc822\r\n\r\n", b"Content-Transfer-Encoding: base64\r\n", b"\r\n\r\n",
          b"charset=unicode-1-1-utf-7", b"Content-Type: multipart/report; report-type=delivery-status\r\n"]  # fmt: skip


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, len(SEED)), st.sampled_from(TOKENS), st.integers(0, 30)),
        min_size=1,
        max_size=15,
    )
)
def test_token_insertions_and_deletions_never_raise(edits: list[tuple[int, bytes, int]]) -> None:
    raw = bytearray(SEED)
    for position, token, delete in edits:
        del raw[position : position + delete]
        raw[position:position] = token
    parse_message(bytes(raw)).model_dump_json(by_alias=True)


def _mailsvc(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "MAILSVC_SCANNER_TICKET_PREFIX": "HD"}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_cli_parse_prints_json_and_exit_2_on_hopeless_input(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(SEED.replace(b"[TT1042]", b"[HD77]"))
    result = _mailsvc("parse", str(path))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for key in ("from", "from_email", "from_display_name", "to", "cc", "reply_to", "subject", "date", "message_id",
                "in_reply_to", "references", "text", "reply_text", "html", "attachments", "kind", "bounce",
                "ticket_number"):  # fmt: skip
        assert key in data, key
    assert (
        data["from_email"] == "j@example.com" and data["ticket_number"] == "HD77" and data["kind"] == "normal"
    )
    assert {"filename", "content_type", "size", "sha256", "md5"} <= set(data["attachments"][0])
    assert all("content" not in a for a in data["attachments"])
    bad = _mailsvc("parse", "-", stdin=b"\x00\x01\x02 not a mail")
    assert bad.returncode == 2 and "error" in json.loads(bad.stdout)
