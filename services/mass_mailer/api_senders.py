"""HTTP API: sender identities, DKIM keys, DNS records to publish, the suppression list.

Secrets (relay passwords, OAuth tokens, private keys) go in, are stored encrypted, and never
come out: responses only say whether a secret is set.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from services.mass_mailer import sender_store, suppression
from services.mass_mailer.models import DkimKeyRecord, SenderIdentity, Suppression
from services.mass_mailer.senders import DnsRecord, dns_records
from shared.apikeys import require_scope
from shared.contracts.base import EmailAddress
from shared.db import in_transaction
from shared.mail.compose import refuse_encoded_line_breaks
from shared.mail.dkim import DkimAlgorithm, dns_txt_value, generate_key, validate_dns_label
from shared.secretbox import SecretBox
from shared.service import ServiceContext

T = TypeVar("T")
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
DisplayName = Annotated[
    str,
    Field(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$"),
    AfterValidator(lambda value: refuse_encoded_line_breaks(value, "display name")),
]
Host = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.:\[\]-]+$")]


class RelayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: Host
    port: int = Field(587, ge=1, le=65535)
    tls: Literal["none", "starttls", "tls"] = "starttls"
    verify_tls: bool = True
    auth: Literal["none", "plain", "login", "xoauth2"] = "none"
    username: Annotated[str, Field(max_length=320)] | None = None
    secret: SecretStr | None = Field(None, description="Password (plain/login) or OAuth2 access token")


class IdentityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    email: EmailAddress
    display_name: DisplayName = ""
    reply_to: EmailAddress | None = None
    is_default: bool = False
    relay: RelayIn
    pool_size: int = Field(8, ge=1, le=64)
    dkim_domain: Annotated[str, Field(max_length=253)] | None = None


class IdentityPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    email: EmailAddress | None = None
    display_name: DisplayName | None = None
    reply_to: EmailAddress | None = None
    is_default: bool | None = None
    relay: RelayIn | None = None
    pool_size: int | None = Field(None, ge=1, le=64)
    dkim_domain: Annotated[str, Field(max_length=253)] | None = None


class RelayOut(BaseModel):
    host: str
    port: int
    tls: str
    verify_tls: bool
    auth: str
    username: str | None
    has_secret: bool


class IdentityOut(BaseModel):
    id: int
    name: str
    email: str
    display_name: str
    reply_to: str | None
    is_default: bool
    relay: RelayOut
    pool_size: int
    dkim_domain: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: SenderIdentity) -> IdentityOut:
        return cls(
            id=row.id or 0,
            name=row.name,
            email=row.email,
            display_name=row.display_name,
            reply_to=row.reply_to,
            is_default=row.is_default,
            relay=RelayOut(
                host=row.relay_host,
                port=row.relay_port,
                tls=row.relay_tls,
                verify_tls=row.relay_verify_tls,
                auth=row.relay_auth,
                username=row.relay_username,
                has_secret=row.relay_secret is not None,
            ),
            pool_size=row.pool_size,
            dkim_domain=row.dkim_domain,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class DkimKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: Annotated[str, Field(max_length=253)]
    selector: Annotated[str, Field(max_length=63)]
    algorithm: DkimAlgorithm = DkimAlgorithm.RSA


class DkimKeyOut(BaseModel):
    id: int
    domain: str
    selector: str
    algorithm: str
    active: bool
    created_at: datetime
    dns_record: DnsRecord


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailAddress
    reason: Literal["bounced", "complained", "unsubscribed", "manual"] = "manual"
    detail: Annotated[str, Field(max_length=2_000)] | None = None


def _apply_relay(row: SenderIdentity, relay: RelayIn, box: SecretBox) -> None:
    if relay.auth != "none" and not relay.username:
        raise HTTPException(422, f"relay auth {relay.auth} needs a username")
    row.relay_host, row.relay_port, row.relay_tls = relay.host, relay.port, relay.tls
    row.relay_verify_tls, row.relay_auth, row.relay_username = relay.verify_tls, relay.auth, relay.username
    if relay.secret is not None:
        row.relay_secret = box.encrypt(relay.secret.get_secret_value().encode())
    elif relay.auth == "none":
        row.relay_secret = None


def _domain(value: str) -> str:
    try:
        return validate_dns_label(value, "domain")
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc


def _key_out(row: DkimKeyRecord, box: SecretBox) -> DkimKeyOut:
    algorithm = DkimAlgorithm(row.algorithm)
    record = DnsRecord(
        "TXT",
        f"{row.selector}._domainkey.{row.domain}",
        dns_txt_value(box.decrypt(row.private_key), algorithm),
        f"DKIM public key ({algorithm})",
    )
    return DkimKeyOut(
        id=row.id or 0,
        domain=row.domain,
        selector=row.selector,
        algorithm=row.algorithm,
        active=row.active,
        created_at=row.created_at,
        dns_record=record,
    )


def routers(context: ServiceContext) -> list[APIRouter]:
    router = APIRouter(prefix="/v1", tags=["sender identities"])
    box = SecretBox.from_settings(context.settings)
    read = [Depends(require_scope("senders:read"))]
    write = [Depends(require_scope("senders:write"))]

    async def db(work: Callable[..., T], *args: object) -> T:
        try:
            return await in_transaction(context.database_url, work, *args)
        except IntegrityError as exc:
            raise HTTPException(409, "conflicts with an existing record (name or selector taken)") from exc

    def _get(session: Session, identity_id: int) -> SenderIdentity:
        row = session.get(SenderIdentity, identity_id)
        if row is None:
            raise HTTPException(404, "no such sender identity")
        return row

    @router.post("/sender-identities", status_code=201, dependencies=write)
    async def create_identity(body: IdentityIn) -> IdentityOut:
        def work(session: Session) -> IdentityOut:
            row = SenderIdentity(
                name=body.name,
                email=body.email,
                display_name=body.display_name,
                reply_to=body.reply_to,
                is_default=body.is_default,
                relay_host=body.relay.host,
                pool_size=body.pool_size,
                dkim_domain=_domain(body.dkim_domain) if body.dkim_domain else None,
            )
            _apply_relay(row, body.relay, box)
            session.add(row)
            session.flush()
            if row.is_default:
                sender_store.clear_other_defaults(session, row.id)
            return IdentityOut.of(row)

        return await db(work)

    @router.get("/sender-identities", dependencies=read)
    async def list_identities() -> list[IdentityOut]:
        def work(session: Session) -> list[IdentityOut]:
            rows = session.exec(select(SenderIdentity).order_by(col(SenderIdentity.id))).all()
            return [IdentityOut.of(r) for r in rows]

        return await db(work)

    @router.get("/sender-identities/{identity_id}", dependencies=read)
    async def get_identity(identity_id: int) -> IdentityOut:
        return await db(lambda s: IdentityOut.of(_get(s, identity_id)))

    @router.patch("/sender-identities/{identity_id}", dependencies=write)
    async def update_identity(identity_id: int, body: IdentityPatch) -> IdentityOut:
        def work(session: Session) -> IdentityOut:
            row = _get(session, identity_id)
            changes = body.model_dump(exclude_unset=True, exclude={"relay"})
            if changes.get("dkim_domain"):
                changes["dkim_domain"] = _domain(changes["dkim_domain"])
            for field, value in changes.items():
                if value is None and field in ("name", "email", "display_name", "is_default", "pool_size"):
                    raise HTTPException(422, f"{field} cannot be null")
                setattr(row, field, value)
            if body.relay is not None:
                _apply_relay(row, body.relay, box)
            row.updated_at = datetime.now(UTC)
            session.add(row)
            session.flush()
            if row.is_default:
                sender_store.clear_other_defaults(session, row.id)
            return IdentityOut.of(row)

        return await db(work)

    @router.delete("/sender-identities/{identity_id}", status_code=204, dependencies=write)
    async def delete_identity(identity_id: int) -> Response:
        await db(lambda s: s.delete(_get(s, identity_id)))
        return Response(status_code=204)

    @router.get("/sender-identities/{identity_id}/dns-records", dependencies=read)
    async def identity_dns_records(identity_id: int) -> list[DnsRecord]:
        def work(session: Session) -> list[DnsRecord]:
            row = _get(session, identity_id)
            domain = row.email.rsplit("@", 1)[1].lower()
            keys = sender_store.keys_for_domain(session, row.dkim_domain or domain)
            return dns_records(domain, keys, box, row.relay_host)

        return await db(work)

    @router.post("/dkim-keys", status_code=201, dependencies=write, summary="Generate and store a DKIM key")
    async def create_dkim_key(body: DkimKeyIn) -> DkimKeyOut:
        try:
            key = generate_key(body.domain, body.selector, body.algorithm)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc

        def work(session: Session) -> DkimKeyOut:
            row = DkimKeyRecord(
                domain=key.domain,
                selector=key.selector,
                algorithm=key.algorithm.value,
                private_key=box.encrypt(key.private_pem),
            )
            session.add(row)
            session.flush()
            return _key_out(row, box)

        return await db(work)

    @router.get("/dkim-keys", dependencies=read)
    async def list_dkim_keys(domain: str) -> list[DkimKeyOut]:
        def work(session: Session) -> list[DkimKeyOut]:
            return [_key_out(row, box) for row in sender_store.keys_for_domain(session, _domain(domain))]

        return await db(work)

    @router.post("/dkim-keys/{key_id}/deactivate", dependencies=write)
    async def deactivate_dkim_key(key_id: int) -> dict[str, bool]:
        def work(session: Session) -> dict[str, bool]:
            row = session.get(DkimKeyRecord, key_id)
            if row is None:
                raise HTTPException(404, "no such DKIM key")
            row.active = False
            session.add(row)
            return {"active": False}

        return await db(work)

    @router.post("/suppressions", status_code=201, dependencies=write)
    async def add_suppression(body: SuppressionIn) -> Suppression:
        def work(session: Session) -> Suppression:
            row = session.get(Suppression, body.email.lower()) or Suppression(
                email=body.email.lower(), reason=body.reason
            )
            row.reason, row.detail = body.reason, body.detail
            session.add(row)
            return row

        return await db(work)

    @router.delete("/suppressions/{email}", status_code=204, dependencies=write)
    async def remove_suppression(email: str) -> Response:
        """Lifts the block, also one kept as a hash when the address's contact was erased."""

        def work(session: Session) -> None:
            rows = [session.get(Suppression, key) for key in suppression.lookup_keys([email])]
            if not any(rows):
                raise HTTPException(404, "address is not suppressed")
            for row in rows:
                if row is not None:
                    session.delete(row)

        await db(work)
        return Response(status_code=204)

    return [router]
