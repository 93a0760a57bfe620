"""The mailsvc command line, run as a user would (subprocess) against real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dkim
import pytest

CORPUS_SAMPLE = (
    b"From: Support <help@example.com>\r\nTo: a@example.org\r\nSubject: [TT1042] =?utf-8?b?w7xiZXI=?=\r\n"
    b"Message-ID: <x1@example.com>\r\n\r\nbody\r\n"
)


def mailsvc(
    *args: str, env: dict[str, str], stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return {"MAILSVC_DATA_DIR": str(tmp_path / "var")}


def test_help_everywhere(cli_env):
    for command in (
        [],
        ["dev"],
        ["migrate"],
        ["parse"],
        ["send-test"],
        ["dkim", "keygen"],
        ["apikey", "create"],
    ):
        result = mailsvc(*command, "--help", env=cli_env)
        assert result.returncode == 0, result.stderr
        assert b"Usage" in result.stdout


def test_parse_prints_json(cli_env, tmp_path):
    path = tmp_path / "m.eml"
    path.write_bytes(CORPUS_SAMPLE)
    result = mailsvc("parse", str(path), env=cli_env)
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert parsed["subject"] == "[TT1042] über" and parsed["from"][0]["email"] == "help@example.com"
    missing = mailsvc("parse", str(tmp_path / "nope.eml"), env=cli_env)
    assert missing.returncode == 2 and b"cannot read" in missing.stderr


def test_migrate_creates_every_service_database(cli_env, tmp_path):
    result = mailsvc("migrate", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "var").glob("*.db")) == [
        "event_triggers.db",
        "mail_scanner.db",
        "mass_mailer.db",
    ]


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_keygen_then_signed_send_verifies(cli_env, tmp_path, smtp_sink, algorithm):
    keygen = mailsvc(
        "dkim", "keygen", "--domain", "example.com", "--selector", "s1", "--algorithm", algorithm, env=cli_env
    )
    assert keygen.returncode == 0, keygen.stderr
    name, _, rest = keygen.stdout.decode().partition(" IN TXT ")
    assert name == "s1._domainkey.example.com."
    record = rest.strip().strip('"').encode()
    key_file = tmp_path / "var" / "dkim" / "example.com" / "s1.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600

    env = {**cli_env, "MAILSVC_SMTP_HOST": smtp_sink.host, "MAILSVC_SMTP_PORT": str(smtp_sink.port)}
    sent = mailsvc(
        "send-test",
        "--to",
        "rcpt@example.org",
        "--from",
        "news@example.com",
        "--subject",
        "Grüße",
        "--dkim-key",
        str(key_file),
        "--dkim-domain",
        "example.com",
        "--dkim-selector",
        "s1",
        env=env,
    )
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["outcome"] == "sent"
    raw = smtp_sink.wait_for(1)[0].data

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"s1._domainkey.example.com." else b""

    assert dkim.verify(raw, dnsfunc=dns)
    tampered = (
        raw.replace("Grüße".encode(), b"x")
        if "Grüße".encode() in raw
        else raw.replace(b"test message", b"TEST message")
    )
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_send_test_reports_a_refusing_relay(cli_env, smtp_sink):
    from tests.servers.smtp import replies

    smtp_sink.hook = replies("550 5.7.1 relaying denied")
    env = {**cli_env, "MAILSVC_SMTP_HOST": smtp_sink.host, "MAILSVC_SMTP_PORT": str(smtp_sink.port)}
    result = mailsvc("send-test", "--to", "rcpt@example.org", env=env)
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert (
        summary["outcome"] == "permanent" and summary["code"] == 550 and summary["enhanced_code"] == "5.7.1"
    )


def test_keygen_rejects_bad_names(cli_env):
    result = mailsvc("dkim", "keygen", "--domain", "exa mple.com", "--selector", "s1", env=cli_env)
    assert result.returncode == 2 and b"not a valid DNS name" in result.stderr


def test_stored_key_and_identity_are_used_by_send_test(cli_env, tmp_path, smtp_sink):
    """keygen --store puts the key where the gateway finds it; send-test --identity sends as that identity."""
    from services.mass_mailer.models import SenderIdentity
    from shared.db import migrate, session_scope
    from shared.settings import Settings

    env = {**cli_env, "MAILSVC_MASTER_KEY": "ZmFrZWtleWZha2VrZXlmYWtla2V5ZmFrZWtleWZha2U="}
    stored = mailsvc("dkim", "keygen", "--domain", "example.com", "--selector", "db1", "--store", env=env)
    assert stored.returncode == 0, stored.stderr
    assert not (tmp_path / "var" / "dkim").exists()  # stored only, no key file
    record = stored.stdout.decode().partition(" IN TXT ")[2].strip().strip('"').encode()

    url = Settings(data_dir=tmp_path / "var").service_database_url("mass_mailer")
    migrate("mass_mailer", url)
    with session_scope(url) as session:
        session.add(
            SenderIdentity(
                name="Desk",
                email="desk@example.com",
                display_name="Help Desk",
                relay_host=smtp_sink.host,
                relay_port=smtp_sink.port,
                relay_tls="none",
                dkim_domain="example.com",
            )
        )
    sent = mailsvc("send-test", "--to", "rcpt@example.org", "--identity", "Desk", env=env)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["signed_by"] == ["rsa:db1._domainkey.example.com"]
    raw = smtp_sink.wait_for(1)[0].data
    assert dkim.verify(
        raw, dnsfunc=lambda name, timeout=5: record if name == b"db1._domainkey.example.com." else b""
    )
    assert b"From: Help Desk <desk@example.com>" in raw
    unknown = mailsvc("send-test", "--to", "rcpt@example.org", "--identity", "Nope", env=env)
    assert unknown.returncode == 2 and b"no sender identity" in unknown.stderr
