import asyncio

import pytest

from shared.consumer import backoff_delay, run_with_retries
from shared.errors import PermanentError, TransientError
from shared.settings import Settings


def fast_settings(**overrides) -> Settings:
    values = {"consumer_retry_backoff_s": 0.001, "consumer_max_attempts": 3}
    values.update(overrides)
    return Settings(**values)


class Flaky:
    def __init__(self, failures: int, error: type[Exception]) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")


async def test_success_after_transient_failures():
    handler = Flaky(4, TransientError)
    error, attempts = await run_with_retries(handler, "t", fast_settings(consumer_transient_deadline_s=5))
    assert error is None and attempts == 5


async def test_unexpected_errors_get_bounded_attempts():
    handler = Flaky(10, RuntimeError)
    error, attempts = await run_with_retries(handler, "t", fast_settings())
    assert isinstance(error, RuntimeError) and attempts == 3 and handler.calls == 3


async def test_permanent_error_is_not_retried():
    handler = Flaky(10, PermanentError)
    error, attempts = await run_with_retries(handler, "t", fast_settings())
    assert isinstance(error, PermanentError) and attempts == 1


async def test_transient_errors_give_up_at_the_deadline():
    handler = Flaky(10_000, TransientError)
    loop = asyncio.get_running_loop()
    started = loop.time()
    error, attempts = await run_with_retries(handler, "t", fast_settings(consumer_transient_deadline_s=0.05))
    assert isinstance(error, TransientError)
    assert attempts > 1
    assert loop.time() - started < 2


@pytest.mark.parametrize("attempt", [1, 2, 5, 20])
def test_backoff_is_capped_and_jittered(attempt):
    delays = {backoff_delay(attempt, 0.5, cap=30) for _ in range(50)}
    assert all(0 <= d <= min(30, 0.5 * 2 ** (attempt - 1)) for d in delays)
    assert len(delays) > 1
