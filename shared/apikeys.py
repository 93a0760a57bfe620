"""Web Service API keys: random secrets with scopes, stored only as SHA-256 hashes.

A key looks like ``msk_<key id>_<secret>``. The key id is public (shown in lists and logs); the
secret is shown once, at creation. High-entropy random secrets make a plain SHA-256 hash safe to
store; comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Field, Session, SQLModel, select

KEY_PREFIX = "msk"
ADMIN_SCOPE = "admin"


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    key_id: str = Field(index=True, unique=True, max_length=32)
    name: str = Field(max_length=200)
    secret_hash: str = Field(max_length=64)
    scopes: str = Field(default="", max_length=2000, description="space-separated")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    last_used_at: datetime | None = None
    revoked: bool = False

    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(token: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def create_api_key(
    session: Session, name: str, scopes: Iterable[str], token: str | None = None
) -> tuple[ApiKey, str]:
    """Store a new key; returns the row and the full token (the only time it is visible)."""
    if token is None:
        token = f"{KEY_PREFIX}_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    parsed = _split(token)
    if parsed is None:
        raise ValueError(f"an API key must look like {KEY_PREFIX}_<id>_<secret>")
    key_id, secret = parsed
    row = ApiKey(key_id=key_id, name=name, secret_hash=_hash(secret), scopes=" ".join(sorted(set(scopes))))
    session.add(row)
    session.flush()
    return row, token


def verify_api_key(session: Session, token: str) -> ApiKey | None:
    parsed = _split(token)
    if parsed is None:
        return None
    key_id, secret = parsed
    row = session.exec(select(ApiKey).where(ApiKey.key_id == key_id)).first()
    if row is None or row.revoked or not hmac.compare_digest(row.secret_hash, _hash(secret)):
        return None
    row.last_used_at = datetime.now(UTC)
    session.add(row)
    return row


_header = APIKeyHeader(name="X-API-Key", auto_error=False)
_bearer = HTTPBearer(auto_error=False)


def require_scope(scope: str) -> Callable[..., ApiKey]:
    """FastAPI dependency: a valid, unrevoked key holding ``scope`` (or ``admin``)."""

    def dependency(
        request: Request,
        header_token: str | None = Depends(_header),
        bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> ApiKey:
        token = header_token or (bearer.credentials if bearer else None)
        if not token:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing API key (X-API-Key header or Bearer token)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        from shared.db import session_scope

        with session_scope(request.app.state.database_url) as session:
            key = verify_api_key(session, token)
        if key is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked API key")
        if scope not in key.scope_set() and ADMIN_SCOPE not in key.scope_set():
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"API key lacks scope '{scope}'")
        return key

    return dependency
