"""Two scanner instances on the same accounts (shared PostgreSQL): every mail imported once."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func
from sqlmodel import select

from services.mail_scanner.app import create_app
from services.mail_scanner.models import ImportedMail, ScannerAccount, Ticket
from shared.db import session_scope
from tests.integration.harness import eventually, running, service_settings
from tests.mail_scanner.engine.helpers import FAST, add_account, append, mail, make_folder

pytestmark = pytest.mark.timeout(240)
PER_ACCOUNT = 60


async def test_two_instances_split_accounts_and_import_each_mail_once(
    kafka_broker, dovecot, postgres, unique, tmp_path
):
    database_url = postgres.create_database(f"ms_{unique.id}")
    common = {**FAST, "database_url": database_url, "scanner_max_accounts": 2, "scanner_batch_size": 15}
    first = service_settings(kafka_broker, unique, tmp_path / "a", **common)
    second = service_settings(kafka_broker, unique, tmp_path / "b", **common)
    folders = [f"two-{unique.id}-{n}" for n in range(3)]
    for folder in folders:
        make_folder(dovecot, folder)
    async with running(create_app, first) as client_a, running(create_app, second):
        for folder in folders:
            await add_account(client_a, dovecot, folder)
        for round_ in range(3):  # mail arrives while both instances run
            for folder in folders:
                append(
                    dovecot,
                    folder,
                    *(
                        mail(sender=f"{folder}-{round_}-{i}@example.org", subject=f"{folder} {round_} {i}")
                        for i in range(PER_ACCOUNT // 3)
                    ),
                )
            await asyncio.sleep(0.3)

        def count() -> int:
            with session_scope(database_url) as session:
                return session.exec(select(func.count()).select_from(Ticket)).one()

        await eventually(lambda: count() >= 3 * PER_ACCOUNT, timeout=120)
        with session_scope(database_url) as session:
            owners = {a.lease_owner for a in session.exec(select(ScannerAccount)).all()}
        await asyncio.sleep(1.0)
        assert count() == 3 * PER_ACCOUNT
        assert len(owners) == 2, owners  # the accounts were split between the instances
    with session_scope(database_url) as session:
        subjects = session.exec(select(Ticket.subject)).all()
        assert len(subjects) == len(set(subjects)) == 3 * PER_ACCOUNT
        assert session.exec(select(func.count()).select_from(ImportedMail)).one() == 3 * PER_ACCOUNT
