"""Microsoft OAuth2 (XOAUTH2) for IMAP: an access token refreshed from a refresh token.

The token endpoint is configurable per account (Microsoft's is
``https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token``). When the endpoint rotates
the refresh token, the caller must persist the new one (encrypted) before using the access
token, or the next refresh fails.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

DEFAULT_SCOPE = "https://outlook.office365.com/IMAP.AccessAsUser.All offline_access"


class OAuthError(Exception):
    """The token endpoint refused or answered nonsense; the message carries no secret."""


@dataclass(frozen=True)
class AccessToken:
    access_token: str
    expires_at: float
    refresh_token: str | None  # set when the endpoint rotated it

    def fresh(self, margin_s: float = 60.0) -> bool:
        return time.monotonic() < self.expires_at - margin_s


def refresh(
    token_url: str,
    client_id: str,
    client_secret: str | None,
    refresh_token: str,
    scope: str | None,
    timeout_s: float = 30.0,
) -> AccessToken:
    form = {
        "grant_type": "refresh_token",
        "client_id": client_id,
        "refresh_token": refresh_token,
        "scope": scope or DEFAULT_SCOPE,
    }
    if client_secret:
        form["client_secret"] = client_secret
    try:
        response = httpx.post(token_url, data=form, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise OAuthError(f"token endpoint unreachable: {type(exc).__name__}") from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
        code = body.get("error") if isinstance(body, dict) else None
        raise OAuthError(f"token refresh failed: HTTP {response.status_code} {str(code or '')[:100]}".strip())
    try:
        lifetime = float(body.get("expires_in", 3600))
    except (TypeError, ValueError):
        lifetime = 3600.0
    rotated = body.get("refresh_token")
    return AccessToken(
        access_token=str(body["access_token"]),
        expires_at=time.monotonic() + lifetime,
        refresh_token=str(rotated) if rotated and rotated != refresh_token else None,
    )
