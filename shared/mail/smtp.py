"""SMTP delivery with aiosmtplib and reply classification.

2xx: sent. 4xx and connection problems: retryable. 5xx: permanent. The enhanced status code
(RFC 3463, e.g. ``5.1.1``) is kept when the server sends one.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from enum import StrEnum

import aiosmtplib
from pydantic import BaseModel, ConfigDict, SecretStr

from shared.settings import Settings, TlsMode

_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")


class Outcome(StrEnum):
    SENT = "sent"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"


class RelayConfig(BaseModel):
    """Where and how to hand mail over."""

    model_config = ConfigDict(extra="forbid")

    host: str
    port: int
    tls: TlsMode = TlsMode.NONE
    verify_tls: bool = True
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RelayConfig:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            tls=settings.smtp_tls,
            verify_tls=settings.smtp_verify_tls,
            username=settings.smtp_username,
            password=settings.smtp_password,
            timeout_s=settings.smtp_timeout_s,
        )


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    code: int | None
    enhanced_code: str | None
    detail: str
    refused: dict[str, tuple[int, str]]


def classify(code: int | None, message: str) -> tuple[Outcome, str | None]:
    match = _ENHANCED.match(message or "")
    enhanced = match.group(1) if match else None
    if code is None:
        return Outcome.RETRYABLE, enhanced
    if 200 <= code < 300:
        return Outcome.SENT, enhanced
    if 500 <= code < 600:
        return Outcome.PERMANENT, enhanced
    return Outcome.RETRYABLE, enhanced


def _tls_context(relay: RelayConfig) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not relay.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def make_client(relay: RelayConfig) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(
        hostname=relay.host,
        port=relay.port,
        use_tls=relay.tls == TlsMode.TLS,
        start_tls=True if relay.tls == TlsMode.STARTTLS else False,
        tls_context=_tls_context(relay) if relay.tls != TlsMode.NONE else None,
        timeout=relay.timeout_s,
    )


async def deliver(client: aiosmtplib.SMTP, message: bytes, sender: str, recipients: list[str]) -> SendResult:
    """Send on a connected client; never raises for SMTP-level outcomes."""
    try:
        refused, reply = await client.sendmail(sender, recipients, message)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        first = exc.recipients[0]
        outcome, enhanced = classify(first.code, first.message)
        refused_map = {r.recipient: (r.code, r.message) for r in exc.recipients}
        return SendResult(outcome, first.code, enhanced, first.message, refused_map)
    except aiosmtplib.SMTPResponseException as exc:
        outcome, enhanced = classify(exc.code, exc.message)
        return SendResult(outcome, exc.code, enhanced, exc.message, {})
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return SendResult(Outcome.RETRYABLE, None, None, f"{type(exc).__name__}: {exc}", {})
    # aiosmtplib returns the final reply's text without its code: it was 250 to get here.
    _, enhanced = classify(250, reply)
    return SendResult(Outcome.SENT, 250, enhanced, reply, dict(refused))


async def send_once(relay: RelayConfig, message: bytes, sender: str, recipients: list[str]) -> SendResult:
    """Connect, authenticate, send one message, quit."""
    client = make_client(relay)
    try:
        await client.connect()
        if relay.username:
            password = relay.password.get_secret_value() if relay.password else ""
            await client.login(relay.username, password)
    except aiosmtplib.SMTPResponseException as exc:
        outcome, enhanced = classify(exc.code, exc.message)
        return SendResult(outcome, exc.code, enhanced, exc.message, {})
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return SendResult(Outcome.RETRYABLE, None, None, f"{type(exc).__name__}: {exc}", {})
    try:
        return await deliver(client, message, sender, recipients)
    finally:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()
