"""Scanner accounts: API shapes, encrypted credentials, and the per-account lease.

Several scanner instances split the accounts with a database lease per account (a conditional
UPDATE that only succeeds when the lease is free or expired, as the gateway's outbound store
does), not Kafka group assignment or PostgreSQL advisory locks: it works the same on SQLite and
PostgreSQL, survives a SIGKILL (the lease simply expires), and - most importantly - the import
transaction re-checks the lease and the folder checkpoint (compare-and-set), so even an
instance that stalls past its lease cannot import a mail a second time. Advisory locks are tied
to a connection that a pooled, thread-hopping worker does not hold for hours, and an accounts
topic would need its own rebalancing protocol for a handful of rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from sqlalchemy import and_, or_, update
from sqlmodel import Session, col, select

from services.mail_scanner.models import ScannerAccount
from shared.secretbox import SecretBox

HostName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.:\-\[\]]+$")]
FolderName = Annotated[str, Field(min_length=1, max_length=200)]


def now() -> datetime:
    return datetime.now(UTC)


class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    host: HostName
    port: Annotated[int, Field(ge=1, le=65_535)] = 993
    encryption: Literal["ssl", "starttls", "none"] = "ssl"
    verify_tls: bool = True
    auth_type: Literal["password", "oauth2"] = "password"
    username: Annotated[str, Field(min_length=1, max_length=320)]
    password: SecretStr | None = None
    oauth_token_url: Annotated[str, Field(max_length=2_000, pattern=r"^https?://")] | None = None
    oauth_client_id: Annotated[str, Field(max_length=500)] | None = None
    oauth_client_secret: SecretStr | None = None
    oauth_refresh_token: SecretStr | None = None
    oauth_scope: Annotated[str, Field(max_length=1_000)] | None = None
    folders: Annotated[list[FolderName], Field(min_length=1, max_length=50)] = ["INBOX"]
    scan_mode: Literal["unread", "since_last"] = "unread"
    error_folder: FolderName = "mailsvc-errors"

    @model_validator(mode="after")
    def _credentials(self) -> AccountIn:
        if self.auth_type == "password" and self.password is None:
            raise ValueError("password authentication needs a password")
        if self.auth_type == "oauth2" and not (
            self.oauth_token_url and self.oauth_client_id and self.oauth_refresh_token
        ):
            raise ValueError("oauth2 needs oauth_token_url, oauth_client_id and oauth_refresh_token")
        return self


class AccountPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    active: bool | None = None
    host: HostName | None = None
    port: Annotated[int, Field(ge=1, le=65_535)] | None = None
    encryption: Literal["ssl", "starttls", "none"] | None = None
    verify_tls: bool | None = None
    username: Annotated[str, Field(min_length=1, max_length=320)] | None = None
    password: SecretStr | None = None
    oauth_refresh_token: SecretStr | None = None
    oauth_client_secret: SecretStr | None = None
    folders: Annotated[list[FolderName], Field(min_length=1, max_length=50)] | None = None
    scan_mode: Literal["unread", "since_last"] | None = None
    error_folder: FolderName | None = None


class AccountOut(BaseModel):
    """An account as the API shows it: no secret, only whether one is set."""

    id: int
    name: str
    active: bool
    host: str
    port: int
    encryption: str
    verify_tls: bool
    auth_type: str
    username: str
    has_password: bool
    has_refresh_token: bool
    oauth_token_url: str | None
    oauth_client_id: str | None
    folders: list[str]
    scan_mode: str
    error_folder: str
    state: str
    last_error: str | None
    last_scan_at: datetime | None
    lease_owner: str | None

    @classmethod
    def of(cls, row: ScannerAccount) -> AccountOut:
        return cls(
            id=row.id or 0,
            name=row.name,
            active=row.active,
            host=row.host,
            port=row.port,
            encryption=row.encryption,
            verify_tls=row.verify_tls,
            auth_type=row.auth_type,
            username=row.username,
            has_password=row.password_enc is not None,
            has_refresh_token=row.oauth_refresh_token_enc is not None,
            oauth_token_url=row.oauth_token_url,
            oauth_client_id=row.oauth_client_id,
            folders=list(row.folders),
            scan_mode=row.scan_mode,
            error_folder=row.error_folder,
            state=row.state,
            last_error=row.last_error,
            last_scan_at=row.last_scan_at,
            lease_owner=row.lease_owner,
        )


def _secret(box: SecretBox, value: SecretStr | None) -> str | None:
    return None if value is None else box.encrypt(value.get_secret_value().encode())


def create(session: Session, box: SecretBox, data: AccountIn) -> ScannerAccount:
    row = ScannerAccount(
        **data.model_dump(
            exclude={"password", "oauth_client_secret", "oauth_refresh_token"},
        ),
        active=False,
        password_enc=_secret(box, data.password),
        oauth_client_secret_enc=_secret(box, data.oauth_client_secret),
        oauth_refresh_token_enc=_secret(box, data.oauth_refresh_token),
    )
    session.add(row)
    session.flush()
    return row


def patch(session: Session, box: SecretBox, row: ScannerAccount, data: AccountPatch) -> ScannerAccount:
    changes = data.model_dump(exclude_unset=True)
    for name in ("password", "oauth_refresh_token", "oauth_client_secret"):
        if name in changes:
            changes.pop(name)
            setattr(row, f"{name}_enc", _secret(box, getattr(data, name)))
    for name, value in changes.items():
        setattr(row, name, value)
    if data.active is False:
        row.state = "inactive"
    elif data.active:
        row.state = "starting" if row.state == "inactive" else row.state
    row.updated_at = now()
    session.add(row)
    return row


def decrypt(box: SecretBox, token: str | None) -> str | None:
    return None if token is None else box.decrypt(token).decode()


def store_rotated_refresh_token(
    session: Session, box: SecretBox, account_id: int, refresh_token: str
) -> None:
    row = session.get(ScannerAccount, account_id)
    if row is not None:
        row.oauth_refresh_token_enc = box.encrypt(refresh_token.encode())
        session.add(row)


def claim_accounts(session: Session, token: str, limit: int, lease_s: float) -> list[int]:
    """Lease up to ``limit`` active accounts that nobody (else) holds; returns their ids."""
    moment = now()
    free = or_(col(ScannerAccount.lease_until).is_(None), col(ScannerAccount.lease_until) < moment)
    mine = session.exec(
        select(ScannerAccount.id).where(ScannerAccount.lease_owner == token, col(ScannerAccount.active))
    ).all()
    room = max(0, limit - len(mine))
    candidates = session.exec(
        select(ScannerAccount.id)
        .where(col(ScannerAccount.active), free)
        .order_by(col(ScannerAccount.id))
        .limit(room)
    ).all()
    claimed = []
    for account_id in candidates:
        result = session.execute(
            update(ScannerAccount)
            .where(and_(col(ScannerAccount.id) == account_id, free, col(ScannerAccount.active)))
            .values(lease_owner=token, lease_until=moment + timedelta(seconds=lease_s))
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            claimed.append(account_id)
    return [i for i in (*mine, *claimed) if i is not None]


def release(session: Session, account_id: int, token: str) -> None:
    session.execute(
        update(ScannerAccount)
        .where(and_(col(ScannerAccount.id) == account_id, col(ScannerAccount.lease_owner) == token))
        .values(lease_owner=None, lease_until=None)
    )


def set_state(session: Session, account_id: int, token: str, state: str, error: str | None = None) -> None:
    values: dict[str, object] = {"state": state}
    if state == "error":
        values["last_error"] = (error or "")[:2_000]
    session.execute(
        update(ScannerAccount)
        .where(and_(col(ScannerAccount.id) == account_id, col(ScannerAccount.lease_owner) == token))
        .values(**values)
    )
