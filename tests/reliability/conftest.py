"""Fixtures and hooks of the reliability suite.

Secrets in logs: every log record of the whole run (every test of every folder, with the
services their fixtures start; this conftest is loaded at collection, before any test runs) is
captured by tests/reliability/logcapture.py, and test_secrets_in_logs.py, moved to the very end
of the run, greps them for every registered test secret.
"""

from __future__ import annotations

import pytest

from tests.integration.harness import API_KEY
from tests.reliability import logcapture


def pytest_configure(config: pytest.Config) -> None:
    logcapture.install()
    logcapture.ACTIVE[0] = True
    logcapture.register_secret(API_KEY.split("_", 2)[2], "the harness bootstrap API key secret")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The log grep must see the records of every other test, wherever it sorts.
    last = [item for item in items if item.nodeid.startswith("tests/reliability/test_secrets_in_logs.py")]
    for item in last:
        items.remove(item)
    items.extend(last)
