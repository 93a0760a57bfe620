from pathlib import Path

from shared.settings import Settings
from shared.topics import ALL_TOPICS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented():
    missing = [
        f"MAILSVC_{name.upper()}"
        for name in Settings.model_fields
        if f"`MAILSVC_{name.upper()}`" not in README
    ]
    assert missing == []


def test_every_topic_is_documented():
    assert [t for t in ALL_TOPICS if f"`{t}`" not in README] == []
