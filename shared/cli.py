"""The ``mailsvc`` command line."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shared.settings import SERVICE_NAMES, Settings, get_settings

if TYPE_CHECKING:
    from services.mass_mailer.senders import ResolvedSender

app = typer.Typer(help="mailsvc: the CRM's email backbone.", no_args_is_help=True)
dkim_app = typer.Typer(help="DKIM keys.", no_args_is_help=True)
apikey_app = typer.Typer(help="Web Service API keys.", no_args_is_help=True)
app.add_typer(dkim_app, name="dkim")
app.add_typer(apikey_app, name="apikey")

ServiceOption = Annotated[list[str] | None, typer.Option("--service", "-s", help="Service(s); default: all")]


def _services(selected: list[str] | None) -> list[str]:
    chosen = selected or list(SERVICE_NAMES)
    unknown = sorted(set(chosen) - set(SERVICE_NAMES))
    if unknown:
        raise typer.BadParameter(f"unknown service(s) {unknown}; choose from {list(SERVICE_NAMES)}")
    return chosen


@app.command()
def dev(
    http_base_port: Annotated[int, typer.Option(help="First of three HTTP ports")] = 8101,
) -> None:
    """Run the whole system locally: Tansu broker, mail catcher, the three services."""
    from shared.dev import run_dev

    raise typer.Exit(run_dev(get_settings(), http_base_port=http_base_port))


@app.command()
def migrate(service: ServiceOption = None) -> None:
    """Apply database migrations (they also run at service start)."""
    from shared.db import migrate as run_migrations

    settings = get_settings()
    for name in _services(service):
        run_migrations(name, settings.service_database_url(name))
        typer.echo(f"{name}: migrated ({_safe_url(settings.service_database_url(name))})")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        typer.echo(f"error: cannot read {path}: {exc.strerror}", err=True)
        raise typer.Exit(2) from exc


@dkim_app.command("keygen")
def dkim_keygen(
    domain: Annotated[str, typer.Option(help="Signing domain (d=)")],
    selector: Annotated[str, typer.Option(help="Selector (s=)")],
    algorithm: Annotated[str, typer.Option(help="rsa or ed25519")] = "rsa",
    out: Annotated[Path | None, typer.Option(help="Private key file (default under data dir)")] = None,
    store: Annotated[
        bool, typer.Option("--store", help="Store the key, encrypted, for the mass mailer's gateway")
    ] = False,
) -> None:
    """Generate a DKIM key, keep it (file with mode 0600, or --store), print the DNS TXT record."""
    from shared.mail.dkim import DkimAlgorithm, generate_key

    try:
        key = generate_key(domain, selector, DkimAlgorithm(algorithm.lower()))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    settings = get_settings()
    if store:
        from services.mass_mailer.models import DkimKeyRecord
        from shared.db import migrate as run_migrations
        from shared.db import session_scope
        from shared.secretbox import SecretBox

        url = settings.service_database_url("mass_mailer")
        run_migrations("mass_mailer", url)
        box = SecretBox.from_settings(settings)
        with session_scope(url) as session:
            session.add(
                DkimKeyRecord(
                    domain=key.domain,
                    selector=key.selector,
                    algorithm=key.algorithm.value,
                    private_key=box.encrypt(key.private_pem),
                )
            )
        typer.echo(f"stored for {key.domain} (selector {key.selector}) in {_safe_url(url)}", err=True)
    if out or not store:
        path = out or settings.data_dir / "dkim" / key.domain / f"{key.selector}.pem"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.private_pem)
        typer.echo(f"private key: {path}", err=True)
    typer.echo(f'{key.dns_name()}. IN TXT "{key.dns_value()}"')


@app.command("send-test")
def send_test(
    to: Annotated[list[str], typer.Option("--to", help="Recipient (repeatable)")],
    subject: Annotated[str, typer.Option(help="Subject")] = "mailsvc test message",
    text: Annotated[str, typer.Option(help="Plain-text body")] = "This is a test message from mailsvc.",
    identity: Annotated[
        str | None, typer.Option(help="Stored sender identity (name or id): its From, relay, DKIM keys")
    ] = None,
    sender: Annotated[str | None, typer.Option("--from", help="From address (without --identity)")] = None,
    dkim_key: Annotated[Path | None, typer.Option(help="DKIM private key file (PEM)")] = None,
    dkim_domain: Annotated[str | None, typer.Option(help="DKIM domain (with --dkim-key)")] = None,
    dkim_selector: Annotated[str | None, typer.Option(help="DKIM selector (with --dkim-key)")] = None,
) -> None:
    """Compose one message, DKIM-sign it, send it through the relay (the gateway's own path)."""
    from shared.mail.compose import MailAddress, MailDraft, compose
    from shared.mail.dkim import DkimAlgorithm, DkimKey, DkimSigner
    from shared.mail.pool import SmtpPool
    from shared.mail.smtp import Outcome, SendResult

    settings = get_settings()
    resolved = _resolve_sender(settings, identity)
    from_address = MailAddress(email=sender) if sender and identity is None else resolved.sender
    keys = list(resolved.dkim_keys)
    if dkim_key:
        if not (dkim_domain and dkim_selector):
            raise typer.BadParameter("--dkim-key needs --dkim-domain and --dkim-selector")
        pem = _read_file(dkim_key)
        algorithm = DkimAlgorithm.RSA if b"RSA" in pem.split(b"\n", 1)[0] else DkimAlgorithm.ED25519
        keys = [DkimKey(dkim_domain, dkim_selector, algorithm, pem)]
    try:
        message = compose(
            MailDraft(
                sender=from_address,
                to=[MailAddress(email=address) for address in to],
                reply_to=resolved.reply_to,
                subject=subject,
                text=text,
            ),
            settings.mail_domain,
        )
        raw = DkimSigner(keys).sign(message.as_bytes()) if keys else message.as_bytes()
    except ValueError as exc:  # CompositionError, DkimError
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc

    async def deliver() -> SendResult:
        async with SmtpPool(resolved.relay, size=1) as pool:
            return await pool.send(raw, from_address.email, list(to))

    result = asyncio.run(deliver())
    summary = {
        "outcome": result.outcome.value,
        "code": result.code,
        "enhanced_code": result.enhanced_code,
        "detail": result.detail,
        "message_id": str(message["Message-ID"]),
        "signed_by": [f"{k.algorithm}:{k.selector}._domainkey.{k.domain}" for k in keys],
        "relay": resolved.relay.address,
    }
    typer.echo(json.dumps(summary))
    raise typer.Exit(0 if result.outcome is Outcome.SENT else 1)


def _resolve_sender(settings: Settings, identity: str | None) -> ResolvedSender:
    """The stored identity, or the configured default sender with any stored keys of its domain."""
    from services.mass_mailer import sender_store
    from services.mass_mailer.senders import resolve
    from shared.db import migrate as run_migrations
    from shared.db import session_scope
    from shared.secretbox import SecretBox

    url = settings.service_database_url("mass_mailer")
    run_migrations("mass_mailer", url)
    box = SecretBox.from_settings(settings)
    with session_scope(url) as session:
        row = sender_store.identity_by_ref(session, identity) if identity else None
        if identity and row is None:
            typer.echo(f"error: no sender identity {identity!r}", err=True)
            raise typer.Exit(2)
        domain = row.dkim_domain if row else settings.default_sender.rsplit("@", 1)[-1]
        keys = sender_store.keys_for_domain(session, domain)
        return resolve(row, keys, box, settings)


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Option(help="What the key is for")],
    scope: Annotated[list[str], typer.Option("--scope", help="Scope (repeatable), e.g. admin")],
    service: ServiceOption = None,
) -> None:
    """Create an API key in each chosen service's database; prints the key once."""
    from shared.apikeys import create_api_key
    from shared.db import migrate as run_migrations
    from shared.db import session_scope

    settings = get_settings()
    token: str | None = None
    urls = {settings.service_database_url(n): n for n in _services(service)}
    for url, name_of_service in urls.items():
        run_migrations(name_of_service, url)
        with session_scope(url) as session:
            _, token = create_api_key(session, name, scope, token)
    typer.echo(token)


@apikey_app.command("revoke")
def apikey_revoke(key_id: str, service: ServiceOption = None) -> None:
    """Revoke a key by its public id (the part after msk_)."""
    from sqlmodel import select

    from shared.apikeys import ApiKey
    from shared.db import session_scope

    settings = get_settings()
    found = False
    for name in _services(service):
        with session_scope(settings.service_database_url(name)) as session:
            for row in session.exec(select(ApiKey).where(ApiKey.key_id == key_id)).all():
                row.revoked = found = True
                session.add(row)
    if not found:
        typer.echo(f"error: no key with id {key_id!r}", err=True)
        raise typer.Exit(1)


def _register_service_commands() -> None:
    """Each service adds its own commands (mail_scanner: parse; mass_mailer: render, mailing)."""
    from services.mail_scanner.cli import register as register_scanner
    from services.mass_mailer.cli import register as register_mailer

    register_scanner(app)
    register_mailer(app)


_register_service_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
