"""Migrations apply on SQLite and PostgreSQL and produce exactly what the models declare."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, inspect
from sqlmodel import SQLModel

import services.event_triggers.app
import services.mail_scanner.app
import services.mass_mailer.app  # noqa: F401  (imports every model of every service)
from shared.db import get_engine, migrate

# Each service's tables carry its prefix; the shared stream's tables (API keys, outbox) are in every database.
SERVICE_PREFIX = {"mass_mailer": "mm_", "mail_scanner": "ms_", "event_triggers": "et_"}
SHARED_TABLES = {"api_key", "outbox_event"}


def tables_of(service: str) -> list:
    return [
        t for name, t in SQLModel.metadata.tables.items()
        if name.startswith(SERVICE_PREFIX[service]) or name in SHARED_TABLES
    ]  # fmt: skip


@pytest.mark.parametrize("service", sorted(SERVICE_PREFIX))
def test_migrations_match_the_models(db_url, service):
    migrate(service, db_url)
    migrate(service, db_url)  # idempotent
    engine = get_engine(db_url)
    metadata = MetaData()
    for table in tables_of(service):
        table.to_metadata(metadata)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "include_name": lambda name, type_, _parent: type_ != "table" or name in metadata.tables,
            },
        )
        diff = compare_metadata(context, metadata)
    assert diff == [], "\n".join(map(repr, diff))
    tables = set(inspect(engine).get_table_names())
    assert {"alembic_version_shared", f"alembic_version_{service}"} <= tables


def test_all_services_share_one_database(db_url):
    for service in SERVICE_PREFIX:
        migrate(service, db_url)
    tables = set(inspect(get_engine(db_url)).get_table_names())
    for service in SERVICE_PREFIX:
        assert {t.name for t in tables_of(service)} <= tables, service
