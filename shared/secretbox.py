"""Encryption of secrets at rest (DKIM private keys, relay passwords, IMAP credentials).

Fernet (AES-128-CBC + HMAC-SHA256, authenticated) under a MultiFernet: the master key setting
may list several comma-separated keys; the first encrypts, all decrypt. To rotate, put a new
key first, re-encrypt the stored secrets with ``SecretBox.rotate``, then drop the old key.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from shared.settings import Settings

log = logging.getLogger(__name__)

KEY_FILE_NAME = "master.key"

_warned = False
_warn_lock = threading.Lock()


class SecretBoxError(Exception):
    """A bad master key or a token that does not decrypt; never carries secret material."""


def generate_master_key() -> str:
    """A new random key, in the form MAILSVC_MASTER_KEY expects."""
    return Fernet.generate_key().decode("ascii")


class SecretBox:
    """``encrypt(bytes) -> str`` and ``decrypt(str) -> bytes`` under the master key(s)."""

    __slots__ = ("_count", "_fernet")

    def __init__(self, keys: Sequence[str]) -> None:
        if isinstance(keys, str):
            raise TypeError("SecretBox takes a sequence of keys; use SecretBox.from_string for 'k1,k2'")
        if not keys:
            raise SecretBoxError("no master key given")
        fernets = []
        for number, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.strip()))
            except (ValueError, TypeError):
                # The library's message is generic already; `from None` keeps the key out of tracebacks.
                raise SecretBoxError(
                    f"master key #{number} is not a valid key (32 url-safe base64-encoded bytes; "
                    "make one with generate_master_key())"
                ) from None
        self._fernet = MultiFernet(fernets)
        self._count = len(fernets)

    @classmethod
    def from_string(cls, value: str) -> SecretBox:
        """Keys as in MAILSVC_MASTER_KEY: comma-separated, the first one encrypts."""
        return cls([key for key in (part.strip() for part in value.split(",")) if key])

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """From ``settings.master_key``; unset: from ``<data_dir>/master.key`` (created if missing)."""
        if settings.master_key is not None:
            return cls.from_string(settings.master_key.get_secret_value())
        path = settings.data_dir / KEY_FILE_NAME
        _warn_once(path)
        try:
            return cls.from_string(_read_or_create_key_file(path))
        except SecretBoxError as exc:
            raise SecretBoxError(f"{path}: {exc}") from None

    def __repr__(self) -> str:
        return f"SecretBox(<{self._count} key{'s' if self._count > 1 else ''}>)"

    def __reduce__(self) -> object:
        raise TypeError("SecretBox cannot be pickled")

    def encrypt(self, plaintext: bytes) -> str:
        return self._fernet.encrypt(plaintext).decode("ascii")

    def decrypt(self, token: str) -> bytes:
        try:
            return self._fernet.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise SecretBoxError(
                "cannot decrypt a stored secret: wrong master key (MAILSVC_MASTER_KEY) or corrupted data"
            ) from None

    def rotate(self, token: str) -> str:
        """The token re-encrypted under the first key (same errors as ``decrypt``)."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeEncodeError):
            raise SecretBoxError(
                "cannot re-encrypt a stored secret: wrong master key or corrupted data"
            ) from None


def _warn_once(path: Path) -> None:
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    log.warning(
        "MAILSVC_MASTER_KEY is not set: secrets are encrypted with the key in %s. "
        "Production should set MAILSVC_MASTER_KEY (and keep it out of the data directory).",
        path,
    )


def _read_or_create_key_file(path: Path) -> str:
    try:
        return path.read_text("ascii").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(generate_master_key() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        # link() never replaces: if another process created the file meanwhile, both use theirs.
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(path.parent)
    return path.read_text("ascii").strip()


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
