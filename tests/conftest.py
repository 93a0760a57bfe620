"""Shared fixtures: real servers, started lazily (only when a test asks for them).

A server that cannot start makes the tests that need it error out; nothing is skipped.
Tests using kafka_broker / postgres (or db_url[postgres]) / dovecot get the markers
kafka / postgres / imap automatically, so ``-m "not kafka"`` works.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.dovecot import DovecotServer
from tests.servers.kafka import AnyBroker, broker_from_env
from tests.servers.postgres import PostgresServer
from tests.servers.procs import Server
from tests.servers.smtp import SmtpSink

_startup_seconds: dict[str, float | None] = {}


def _started(name: str, server: Server) -> None:
    _startup_seconds[name] = server.startup_seconds


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[AnyBroker]:
    """The broker chosen by MAILSVC_TEST_KAFKA (default: Apache Kafka). ``.bootstrap``,
    ``.kind`` in {"kafka", "tansu", "external"}. Topics auto-create with 3 partitions."""
    with broker_from_env() as broker:
        _started(f"kafka ({broker.kind})", broker)
        yield broker


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """Plain-IMAP Dovecot shared by the session: users alice/alicepw and bob/bobpw.
    Use unique folder names (or LMTP-deliver unique messages) to stay independent."""
    with DovecotServer() as server:
        _started("dovecot", server)
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """PostgreSQL shared by the session. Do not stop it in a test: start your own
    PostgresServer for outage tests. ``.url``, ``.create_database()``."""
    with PostgresServer() as server:
        _started("postgres", server)
        yield server


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A fresh, started aiosmtpd sink per test: ``.host``, ``.port``, ``.messages``,
    ``.hook`` / ``.rcpt_hook`` to answer 451/550/DROP, ``.wait_for(n)``."""
    with SmtpSink() as sink:
        yield sink


class UniqueNames:
    """``unique("crm.contacts")`` -> "t1a2b3c4d.crm.contacts"; one prefix per test."""

    def __init__(self) -> None:
        self.id = f"t{uuid.uuid4().hex[:8]}"
        self.prefix = f"{self.id}."

    def __call__(self, name: str = "") -> str:
        return f"{self.prefix}{name}" if name else self.id


@pytest.fixture
def unique() -> UniqueNames:
    """Unique Kafka topic / group / folder names for this test (see UniqueNames)."""
    return UniqueNames()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database per test: a SQLite file, or a new database on the session
    PostgreSQL (dropped afterwards). Test ids get [sqlite] / [postgres]."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    pg: PostgresServer = request.getfixturevalue("postgres")
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = pg.create_database(name)
    yield url
    if pg.running:
        pg.drop_database(name)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("filterwarnings", "ignore:Requiring AUTH while not requiring TLS:UserWarning")


_MARKERS = {"kafka_broker": "kafka", "postgres": "postgres", "dovecot": "imap"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("db_url") == "postgres":
            names.add("postgres")
        for fixture, marker in _MARKERS.items():
            if fixture in names:
                item.add_marker(marker)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _startup_seconds:
        times = ", ".join(
            f"{name} {'?' if s is None else f'{s:.1f}'} s" for name, s in _startup_seconds.items()
        )
        terminalreporter.write_line(f"server start-up: {times}")
