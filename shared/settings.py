"""Runtime configuration, read from the environment (prefix ``MAILSVC_``) and an optional ``.env``."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAMES = ("mass_mailer", "mail_scanner", "event_triggers")

DEFAULT_HTTP_PORTS = {"mass_mailer": 8101, "mail_scanner": 8102, "event_triggers": 8103}


class TlsMode(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class Settings(BaseSettings):
    """Every knob of the system. See README "Configuration" for the full reference."""

    model_config = SettingsConfigDict(env_prefix="MAILSVC_", env_file=".env", extra="ignore", frozen=True)

    data_dir: Path = Field(Path("var"), description="Local state: SQLite files, outbox, keys")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL. Unset: one SQLite file per service under data_dir",
    )

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    kafka_security_protocol: str = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_SSL")
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_session_timeout_ms: int = Field(10_000, description="Consumer group session timeout")
    kafka_heartbeat_interval_ms: int = 3_000
    kafka_topic_prefix: str = Field("", description="Prepended to every topic name")
    kafka_group_prefix: str = Field("mailsvc", description="Consumer groups are PREFIX.SERVICE.TOPIC")
    kafka_create_topics: bool = Field(True, description="Create missing topics at service start")
    kafka_partitions: int = Field(6, ge=1, description="Partitions of topics created by us")
    kafka_replication_factor: int = Field(1, ge=1, description="Replication of topics created by us")

    consumer_max_attempts: int = Field(3, ge=1, description="Attempts before a message goes to DLQ")
    consumer_retry_backoff_s: float = Field(0.5, ge=0, description="First retry delay")
    consumer_transient_deadline_s: float = Field(
        300.0, ge=0, description="How long a transient failure (DB, SMTP down) is retried"
    )

    http_host: str = "127.0.0.1"
    http_port: int | None = Field(None, description="Unset: 8101 mailer, 8102 scanner, 8103 triggers")

    log_level: str = "INFO"
    log_json: bool = False

    master_key: SecretStr | None = Field(
        None, description="Key that encrypts secrets at rest (base64 Fernet key)"
    )
    mail_domain: str = Field("localhost", description="Our sending domain (Message-ID, bounces)")
    default_sender: str = Field("noreply@localhost", description="Default From address")

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_tls: TlsMode = TlsMode.NONE
    smtp_verify_tls: bool = True
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = 30.0

    smtp_pool_size: int = Field(8, ge=1, le=64, description="Connections per relay")

    gateway_concurrency: int = Field(16, ge=1, description="Transactional mails handled at once")
    gateway_retry_base_s: float = Field(30.0, gt=0, description="First retry delay after a 4xx")
    gateway_retry_max_s: float = Field(3600.0, gt=0, description="Longest delay between retries")
    gateway_retry_deadline_s: float = Field(
        86_400.0, gt=0, description="Give up (failed, expired) this long after the request arrived"
    )
    gateway_lease_s: float = Field(
        60.0, gt=0, description="How long a gateway instance owns a message it is sending"
    )
    gateway_sweep_interval_s: float = Field(1.0, gt=0, description="Retry/recovery sweep period")

    # --- mass mailer (contacts, templates, mailings) ---
    templates_chromium: str = Field(
        "/usr/bin/chromium", description="Headless Chromium for template previews"
    )
    templates_preview_height: int = Field(1600, ge=200, le=20_000, description="Height (px) of preview PNGs")
    templates_link_check_external: bool = Field(
        False, description="Test links also sends HEAD to non-loopback hosts (needs outside network)"
    )
    templates_link_check_timeout_s: float = Field(5.0, gt=0, description="Timeout of one link check")
    mailing_public_url: str = Field(
        "http://127.0.0.1:8101", description="Public base URL of unsubscribe/view/open-pixel links (HTTPS)"
    )
    mailing_link_secret: SecretStr | None = Field(
        None, description="HMAC key of unsubscribe tokens and VERP addresses; unset: from master key"
    )
    mailing_unsubscribe_mailto: str | None = Field(
        None, description="mailto address of List-Unsubscribe; unset: unsubscribe@MAIL_DOMAIN"
    )
    mailing_bounce_domain: str | None = Field(None, description="VERP Return-Path domain; unset: mail domain")
    mailing_open_tracking: bool = Field(True, description="Add the open-tracking pixel to bulk mail")
    mailing_batch_size: int = Field(200, ge=1, le=5_000, description="Recipients per bulk batch message")
    mailing_sender_concurrency: int = Field(48, ge=1, description="Bulk messages in flight per process")
    mailing_scheduler_interval_s: float = Field(0.5, gt=0, description="Scheduler/planner/retry sweep period")
    mailing_lease_s: float = Field(60.0, gt=0, description="How long a sender owns claimed deliveries")
    mailing_retry_base_s: float = Field(60.0, gt=0, description="First retry delay of a deferred delivery")
    mailing_retry_max_s: float = Field(3600.0, gt=0, description="Longest delay between delivery attempts")
    mailing_max_attempts: int = Field(10, ge=1, description="Attempts before a deferred delivery fails")
    mailing_relay_rate_per_s: float = Field(0.0, ge=0, description="Messages/s per relay; 0 = unlimited")
    mailing_domain_rate_per_s: float = Field(
        0.0, ge=0, description="Messages/s per recipient domain; 0 = unlimited (4xx still slows a domain)"
    )
    group_update_check_s: float = Field(30.0, gt=0, description="How often due update-target-group tasks run")

    # --- mail scanner (IMAP, tickets) ---
    scanner_ticket_prefix: str = Field("TT", max_length=20, description="Ticket number prefix (TT1042)")
    scanner_ticket_start: int = Field(1000, ge=0, description="Ticket numbers are this plus the ticket id")
    scanner_poll_interval_s: float = Field(30.0, gt=0, description="Polling period when IDLE is unsupported")
    scanner_idle_renew_s: float = Field(
        1740.0, gt=0, le=1740, description="Re-issue IMAP IDLE at least this often (<= 29 min)"
    )
    scanner_lease_s: float = Field(60.0, gt=0, description="How long an instance owns an account it scans")
    scanner_claim_interval_s: float = Field(5.0, gt=0, description="How often free accounts are claimed")
    scanner_max_accounts: int = Field(50, ge=1, description="Accounts one instance scans at most")
    scanner_max_message_bytes: int = Field(
        25 * 1024 * 1024, gt=0, description="Larger mails go to the error folder"
    )
    scanner_batch_size: int = Field(200, ge=1, le=5_000, description="Mails imported per transaction")
    scanner_reopen_closed: bool = Field(True, description="A follow-up reopens a closed ticket")
    scanner_auto_ack: bool = Field(False, description="Acknowledge new tickets to the requester")
    scanner_auto_ack_interval_s: float = Field(
        3600.0, ge=0, description="At most one auto-acknowledgement per address in this period"
    )
    scanner_own_addresses: str = Field(
        "", description="Comma-separated sending addresses of ours; mail from them is dropped"
    )
    scanner_loop_header: str = Field(
        "X-Mailsvc-Loop",
        max_length=76,
        description="Header our mails carry; incoming mail with it is dropped",
    )
    scanner_sender_identity: str | None = Field(
        None,
        max_length=200,
        description="Sender identity of agent replies and acknowledgements; unset: default",
    )
    scanner_imap_timeout_s: float = Field(60.0, gt=0, description="IMAP socket timeout")

    # --- event triggers (scheduling, certificates) ---
    event_triggers_scheduler_interval_s: float = Field(
        1.0, gt=0, description="Event triggers: period of the scheduler (due sends, GDPR deletions)"
    )
    event_triggers_batch_size: int = Field(
        500, ge=1, le=5_000, description="Event triggers: due sends one scheduler pass claims at once"
    )
    event_triggers_lease_s: float = Field(
        60.0, gt=0, description="Event triggers: how long an instance owns the sends it claimed"
    )
    event_triggers_public_url: str = Field(
        "http://127.0.0.1:8103", description="Event triggers: public base URL of the add-to-calendar links"
    )
    event_triggers_link_secret: SecretStr | None = Field(
        None, description="Event triggers: key that signs calendar links (unset: one is generated and stored)"
    )
    event_triggers_clock_file: Path | None = Field(
        None, description="Event triggers, tests/demos only: read the scheduler's time from this file"
    )

    bootstrap_api_key: SecretStr | None = Field(
        None, description="If set, an admin API key with this value is created at start-up"
    )

    def service_database_url(self, service: str) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / f'{service}.db').as_posix()}"

    def service_http_port(self, service: str) -> int:
        return self.http_port if self.http_port is not None else DEFAULT_HTTP_PORTS[service]

    def topic(self, name: str) -> str:
        return f"{self.kafka_topic_prefix}{name}"

    def group(self, service: str) -> str:
        return f"{self.kafka_group_prefix}.{service}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
