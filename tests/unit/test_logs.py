import json
import logging

from shared.logs import JsonFormatter, redact


def test_credentials_are_redacted():
    assert "hunter2" not in redact("login failed password=hunter2 user=x")
    assert "s3cr3t" not in redact("Authorization: s3cr3t")
    assert "abcdef" not in redact("key msk_0011aa_abcdef used")


def test_json_lines_carry_extra_fields():
    record = logging.makeLogRecord({"msg": "sent %s", "args": ("x",), "levelname": "INFO", "topic": "t"})
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "sent x" and entry["topic"] == "t"
