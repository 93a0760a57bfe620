from __future__ import annotations

from typing import Any

import pytest

from services.event_triggers.clock import ManualClock
from shared.settings import Settings
from tests.event_triggers.helpers import T0
from tests.integration.harness import service_settings


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def trigger_settings(kafka_broker: Any, unique: Any, tmp_path: Any, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "event_triggers_scheduler_interval_s": 0.1,
        "event_triggers_lease_s": 5,
        "mail_domain": "events.example.com",
        "default_sender": "events@example.com",
        "event_triggers_link_secret": "test-link-secret",
        **overrides,
    }
    return service_settings(kafka_broker, unique, tmp_path, **values)


@pytest.fixture
def settings(kafka_broker, unique, tmp_path) -> Settings:
    return trigger_settings(kafka_broker, unique, tmp_path)
