"""Content-addressed attachment storage: one file per distinct content, named by its SHA-256."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

from shared.files import write_atomically

MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_RESERVED = re.compile(r'[<>:"|?*]')
_WINDOWS_NAMES = re.compile(r"^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$", re.IGNORECASE)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class AttachmentTooLarge(ValueError):
    pass


def sanitize_filename(name: str | None, default: str = "attachment") -> str:
    """A display/download name without paths, control or bidi characters; at most 200 chars."""
    value = unicodedata.normalize("NFC", name or "")
    value = _CONTROL.sub("", value)
    value = re.split(r"[\\/]", value)[-1]
    value = _RESERVED.sub("_", value).strip().strip(".").strip()
    if _WINDOWS_NAMES.match(value):
        value = f"_{value}"
    if len(value) > 200:
        stem, dot, ext = value.rpartition(".")
        value = f"{stem[: 190 - len(ext)]}.{ext}" if dot and len(ext) <= 10 else value[:200]
    return value or default


def digests(content: bytes) -> tuple[str, str]:
    """(sha256, md5) hex digests."""
    return hashlib.sha256(content).hexdigest(), hashlib.md5(content, usedforsecurity=False).hexdigest()


class AttachmentStore:
    """Files under ``root/ab/cd/<sha256>``; writing the same content twice is a no-op."""

    def __init__(self, root: Path, max_bytes: int = MAX_ATTACHMENT_BYTES) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    def path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, content: bytes) -> str:
        """Store the content (atomically) and return its sha256."""
        if len(content) > self.max_bytes:
            raise AttachmentTooLarge(f"attachment of {len(content)} bytes exceeds {self.max_bytes}")
        sha256 = hashlib.sha256(content).hexdigest()
        target = self.path(sha256)
        if target.exists():
            return sha256
        write_atomically(target, content)
        return sha256

    def get(self, sha256: str) -> bytes | None:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()
