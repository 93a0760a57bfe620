"""Sender identities: who a message is from, which relay carries it, which DKIM keys sign it.

Pure functions over stored rows; secrets are decrypted only here, only when building a relay.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.mass_mailer.models import DkimKeyRecord, SenderIdentity
from shared.mail.compose import MailAddress
from shared.mail.dkim import DkimAlgorithm, DkimKey, dns_txt_value
from shared.mail.smtp import RelayConfig
from shared.secretbox import SecretBox
from shared.settings import Settings, TlsMode


@dataclass(frozen=True)
class ResolvedSender:
    """Everything the gateway needs to send as one identity."""

    name: str
    sender: MailAddress
    reply_to: MailAddress | None
    envelope_from: str
    relay: RelayConfig
    pool_size: int
    dkim_keys: tuple[DkimKey, ...]


@dataclass(frozen=True)
class DnsRecord:
    type: str
    name: str
    value: str
    purpose: str


def relay_for(identity: SenderIdentity, box: SecretBox, settings: Settings) -> RelayConfig:
    secret = box.decrypt(identity.relay_secret).decode() if identity.relay_secret else None
    return RelayConfig(
        host=identity.relay_host,
        port=identity.relay_port,
        tls=TlsMode(identity.relay_tls),
        verify_tls=identity.relay_verify_tls,
        auth=identity.relay_auth,  # type: ignore[arg-type]
        username=identity.relay_username,
        password=secret if identity.relay_auth in ("plain", "login") else None,
        oauth_token=secret if identity.relay_auth == "xoauth2" else None,
        local_hostname=settings.mail_domain if settings.mail_domain != "localhost" else None,
        connect_timeout_s=settings.smtp_timeout_s,
        command_timeout_s=settings.smtp_timeout_s,
    )


def dkim_keys_for(records: list[DkimKeyRecord], box: SecretBox) -> tuple[DkimKey, ...]:
    """The active keys of a domain, at most one per algorithm (two = dual signature)."""
    chosen: dict[str, DkimKeyRecord] = {}
    for record in sorted(records, key=lambda r: r.created_at):
        if record.active:
            chosen[record.algorithm] = record  # the newest active key per algorithm wins
    return tuple(
        DkimKey(r.domain, r.selector, DkimAlgorithm(r.algorithm), box.decrypt(r.private_key))
        for r in chosen.values()
    )


def resolve(
    identity: SenderIdentity | None,
    keys: list[DkimKeyRecord],
    box: SecretBox,
    settings: Settings,
) -> ResolvedSender:
    """An identity row, or the configured default sender when there is none."""
    if identity is None:
        return ResolvedSender(
            name="(settings default)",
            sender=MailAddress(email=settings.default_sender),
            reply_to=None,
            envelope_from=settings.default_sender,
            relay=RelayConfig.from_settings(settings),
            pool_size=settings.smtp_pool_size,
            dkim_keys=dkim_keys_for(keys, box),
        )
    return ResolvedSender(
        name=identity.name,
        sender=MailAddress(email=identity.email, name=identity.display_name),
        reply_to=MailAddress(email=identity.reply_to) if identity.reply_to else None,
        envelope_from=identity.email,
        relay=relay_for(identity, box, settings),
        pool_size=identity.pool_size,
        dkim_keys=dkim_keys_for(keys, box),
    )


def dns_records(
    sending_domain: str, keys: list[DkimKeyRecord], box: SecretBox, relay_host: str
) -> list[DnsRecord]:
    """What the customer publishes so receivers accept mail from this identity."""
    records = [
        DnsRecord(
            "TXT",
            f"{key.selector}._domainkey.{key.domain}",
            dns_txt_value(box.decrypt(key.private_key), DkimAlgorithm(key.algorithm)),
            f"DKIM public key ({key.algorithm})",
        )
        for key in keys
        if key.active
    ]
    relay_domain = ".".join(relay_host.split(".")[-2:]) if "." in relay_host else relay_host
    records.append(
        DnsRecord(
            "TXT",
            sending_domain,
            f"v=spf1 include:{relay_domain} ~all",
            f"SPF suggestion: authorise the relay {relay_host}; merge with an existing SPF record "
            "(only one v=spf1 record per name) and use the include your relay provider documents",
        )
    )
    records.append(
        DnsRecord(
            "TXT",
            f"_dmarc.{sending_domain}",
            f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{sending_domain}; adkim=r; aspf=r",
            "DMARC suggestion: start with p=none and reports, move to quarantine/reject once "
            "reports show all legitimate mail aligned",
        )
    )
    return records
