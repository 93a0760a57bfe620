"""SecretBox: round trip, key rotation, wrong keys and corrupt tokens, the key file fallback."""

from __future__ import annotations

import logging
import pickle
import stat
import threading

import pytest
from cryptography.fernet import Fernet

from shared import secretbox
from shared.secretbox import SecretBox, SecretBoxError, generate_master_key
from shared.settings import Settings

SECRET = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHunter2\n-----END PRIVATE KEY-----\n"


@pytest.fixture(autouse=True)
def _warn_again(monkeypatch):
    monkeypatch.setattr(secretbox, "_warned", False)


def test_round_trip():
    box = SecretBox([generate_master_key()])
    token = box.encrypt(SECRET)
    assert isinstance(token, str) and SECRET not in token.encode()
    assert box.decrypt(token) == SECRET
    assert box.encrypt(SECRET) != token  # random IV per token
    assert box.decrypt(box.encrypt(b"")) == b""


def test_generated_keys_are_fernet_keys_and_distinct():
    keys = {generate_master_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        Fernet(key)


def test_rotation_first_key_encrypts_all_decrypt():
    old, new = generate_master_key(), generate_master_key()
    old_token = SecretBox([old]).encrypt(SECRET)

    rotating = SecretBox.from_string(f" {new} , {old} ,")
    assert rotating.decrypt(old_token) == SECRET
    new_token = rotating.encrypt(SECRET)
    assert SecretBox([new]).decrypt(new_token) == SECRET
    with pytest.raises(SecretBoxError):
        SecretBox([old]).decrypt(new_token)

    rotated = rotating.rotate(old_token)
    assert SecretBox([new]).decrypt(rotated) == SECRET


@pytest.mark.parametrize("corrupt", ["wrong-key", "flipped", "truncated", "garbage", "empty", "non-ascii"])
def test_bad_tokens_raise_a_clear_error_without_secrets(corrupt):
    key = generate_master_key()
    token = SecretBox([key]).encrypt(SECRET)
    box = SecretBox([generate_master_key()]) if corrupt == "wrong-key" else SecretBox([key])
    bad = {
        "wrong-key": token,
        "flipped": token[:20] + ("A" if token[20] != "A" else "B") + token[21:],
        "truncated": token[:-10],
        "garbage": "not a token at all",
        "empty": "",
        "non-ascii": token[:-1] + "é",
    }[corrupt]
    with pytest.raises(SecretBoxError, match="wrong master key") as error:
        box.decrypt(bad)
    message = str(error.value)
    assert key not in message and token not in message and "Hunter2" not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__
    with pytest.raises(SecretBoxError):
        box.rotate(bad)


@pytest.mark.parametrize("value", ["", " , ", "tooshort", "x" * 44])
def test_invalid_master_keys_are_refused_without_echoing_them(value):
    with pytest.raises(SecretBoxError) as error:
        SecretBox.from_string(value)
    if value.strip(" ,"):
        assert value not in str(error.value)


def test_second_key_is_named_when_invalid():
    with pytest.raises(SecretBoxError, match="#2"):
        SecretBox.from_string(f"{generate_master_key()},nonsense")


def test_a_plain_string_is_not_taken_for_a_key_list():
    with pytest.raises(TypeError):
        SecretBox(generate_master_key())  # type: ignore[arg-type]


def test_repr_and_pickle_show_no_keys():
    first, second = generate_master_key(), generate_master_key()
    box = SecretBox([first, second])
    assert repr(box) == "SecretBox(<2 keys>)" and str(box) == repr(box)
    assert first not in repr(box) and second not in repr(box)
    assert repr(SecretBox([first])) == "SecretBox(<1 key>)"
    with pytest.raises(TypeError):
        pickle.dumps(box)


def test_from_settings_uses_the_master_key(tmp_path, caplog):
    old, new = generate_master_key(), generate_master_key()
    token = SecretBox([old]).encrypt(SECRET)
    settings = Settings(data_dir=tmp_path / "var", master_key=f"{new},{old}")
    with caplog.at_level(logging.WARNING, logger="shared.secretbox"):
        box = SecretBox.from_settings(settings)
    assert box.decrypt(token) == SECRET
    assert not (tmp_path / "var" / "master.key").exists()
    assert not caplog.records


def test_from_settings_without_master_key_creates_a_private_key_file_once(tmp_path, caplog):
    settings = Settings(data_dir=tmp_path / "var", master_key=None)
    with caplog.at_level(logging.WARNING, logger="shared.secretbox"):
        first = SecretBox.from_settings(settings)
        second = SecretBox.from_settings(settings)
    path = tmp_path / "var" / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert second.decrypt(first.encrypt(SECRET)) == SECRET
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no temporary file left
    Fernet(path.read_text().strip())

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "MAILSVC_MASTER_KEY" in warnings[0].getMessage()
    assert path.read_text().strip() not in caplog.text


def test_an_existing_key_file_is_used_not_replaced(tmp_path):
    key = generate_master_key()
    (tmp_path / "master.key").write_text(key + "\n")
    box = SecretBox.from_settings(Settings(data_dir=tmp_path, master_key=None))
    assert SecretBox([key]).decrypt(box.encrypt(SECRET)) == SECRET
    assert (tmp_path / "master.key").read_text() == key + "\n"


def test_a_broken_key_file_is_reported_with_its_path(tmp_path):
    (tmp_path / "master.key").write_text("oops\n")
    with pytest.raises(SecretBoxError, match=r"master\.key") as error:
        SecretBox.from_settings(Settings(data_dir=tmp_path, master_key=None))
    assert "oops" not in str(error.value)


def test_concurrent_first_use_agrees_on_one_key(tmp_path):
    settings = Settings(data_dir=tmp_path, master_key=None)
    barrier = threading.Barrier(8)
    boxes: list[SecretBox] = []

    def create() -> None:
        barrier.wait()
        boxes.append(SecretBox.from_settings(settings))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    token = boxes[0].encrypt(SECRET)
    assert all(box.decrypt(token) == SECRET for box in boxes)
    assert [p.name for p in tmp_path.iterdir()] == ["master.key"]
