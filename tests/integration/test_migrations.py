"""Migrations apply on SQLite and PostgreSQL and produce exactly what the models declare."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, inspect

from services.event_triggers.models import TABLES as TRIGGER_TABLES
from services.mail_scanner.models import TABLES as SCANNER_TABLES
from services.mass_mailer.models import TABLES as MAILER_TABLES
from shared.apikeys import ApiKey
from shared.db import get_engine, migrate
from shared.outbox import OutboxEvent

SERVICE_TABLES = {
    "mass_mailer": MAILER_TABLES,
    "mail_scanner": SCANNER_TABLES,
    "event_triggers": TRIGGER_TABLES,
}


@pytest.mark.parametrize("service", sorted(SERVICE_TABLES))
def test_migrations_match_the_models(db_url, service):
    migrate(service, db_url)
    migrate(service, db_url)  # idempotent
    engine = get_engine(db_url)
    metadata = MetaData()
    for table in (*SERVICE_TABLES[service], ApiKey.__table__, OutboxEvent.__table__):
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
    for service in SERVICE_TABLES:
        migrate(service, db_url)
    tables = set(inspect(get_engine(db_url)).get_table_names())
    for service, owned in SERVICE_TABLES.items():
        assert {t.name for t in owned} <= tables, service
