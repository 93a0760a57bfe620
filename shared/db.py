"""Database engines, sessions and Alembic migrations.

Every service owns its tables and its migration stream (``services/<name>/migrations``); the
tables all services need (API keys) live in ``shared/migrations``. Each stream keeps its own
version table, so the services can share one PostgreSQL database or use separate SQLite files.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, MetaData, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, create_engine

from shared.errors import TransientError

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
MIGRATION_STREAMS = {
    "shared": REPO_ROOT / "shared" / "migrations",
    "mass_mailer": REPO_ROOT / "services" / "mass_mailer" / "migrations",
    "mail_scanner": REPO_ROOT / "services" / "mail_scanner" / "migrations",
    "event_triggers": REPO_ROOT / "services" / "event_triggers" / "migrations",
}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@lru_cache(maxsize=16)
def get_engine(url: str) -> Engine:
    """One pooled engine per URL; SQLite files get WAL mode and their folder is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(get_engine(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


_SQLITE_TURNS: dict[str, threading.Lock] = {}


def _turn(url: str) -> AbstractContextManager[Any]:
    """SQLite has one writer at a time; threads of one process that collide get SQLITE_BUSY,
    and SQLite's busy handler then sleeps up to 100 ms between tries. Taking turns in-process
    instead costs nothing of SQLite's concurrency and saves those sleeps."""
    if not url.startswith("sqlite"):
        return nullcontext()
    return _SQLITE_TURNS.setdefault(url, threading.Lock())


async def in_transaction(url: str, work: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run ``work(session, *args, **kwargs)`` in a worker thread inside one transaction.

    A database that cannot be reached raises TransientError, so consumers back off and retry.
    """

    def run() -> T:
        with _turn(url), session_scope(url) as session:
            return work(session, *args, **kwargs)

    try:
        return await asyncio.to_thread(run)
    except OperationalError as exc:
        raise TransientError(f"database unavailable: {type(exc.orig).__name__}") from exc


def alembic_config(stream: str, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATION_STREAMS[stream]))
    config.set_main_option("version_table", f"alembic_version_{stream}")
    config.attributes["url"] = url
    return config


MIGRATION_LOCK_ID = 0x6D61696C  # PostgreSQL advisory lock key shared by every replica


def migrate(service: str, url: str, revision: str = "heads") -> None:
    """Bring the shared tables and ``service``'s tables up to ``revision`` (idempotent).

    On PostgreSQL an advisory lock serialises replicas that start at the same moment.
    """
    engine = get_engine(url)
    if engine.dialect.name != "postgresql":
        for stream in ("shared", service):
            command.upgrade(alembic_config(stream, url), revision if stream == service else "heads")
        return
    with engine.connect() as lock_connection:
        lock_connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_ID})
        try:
            for stream in ("shared", service):
                command.upgrade(alembic_config(stream, url), revision if stream == service else "heads")
        finally:
            lock_connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_ID})
            lock_connection.commit()


def run_alembic_env(target_metadata: MetaData | None = None) -> None:
    """Body of every stream's env.py: online migrations against the configured URL."""
    from alembic import context

    config = context.config
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL given to the migration")
    engine = get_engine(url)
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=config.get_main_option("version_table") or "alembic_version",
            render_as_batch=connection.dialect.name == "sqlite",
        )
        context.run_migrations()
