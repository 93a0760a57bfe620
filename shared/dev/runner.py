"""``mailsvc dev``: Tansu, the mail catcher and the three services under one supervisor."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys

from shared.dev.catcher import outbox_dir
from shared.dev.supervisor import EXIT_CHILD_DIED, EXIT_OK, ChildSpec, Supervisor
from shared.dev.tansu import (
    BrokerError,
    parse_bootstrap,
    prepare_broker,
    resolve_tansu_bin,
    tansu_command,
)
from shared.settings import SERVICE_NAMES, Settings

SERVICE_HOST = "127.0.0.1"
# Stop order: services first (they commit offsets and flush on the way out), the broker last.
TIER_BROKER, TIER_CATCHER, TIER_SERVICES = 0, 1, 2
BROKER_READY_TIMEOUT_S = 30.0
# Tansu's JoinGroup waits max(1 s, session_timeout / 2): short timeouts keep start-up fast.
TANSU_CONSUMER_DEFAULTS = {
    "MAILSVC_KAFKA_SESSION_TIMEOUT_MS": "2000",
    "MAILSVC_KAFKA_HEARTBEAT_INTERVAL_MS": "200",
}


def service_ports(http_base_port: int) -> dict[str, int]:
    """HTTP port of each service: base, base + 1, base + 2 in SERVICE_NAMES order."""
    return {name: http_base_port + i for i, name in enumerate(SERVICE_NAMES)}


def child_env(settings: Settings) -> dict[str, str]:
    """Environment for every child: ours, pointed at the dev broker and the catcher."""
    env = dict(os.environ)
    for key, value in TANSU_CONSUMER_DEFAULTS.items():
        env.setdefault(key, value)
    env.update(
        {
            "MAILSVC_DATA_DIR": str(settings.data_dir.resolve()),
            "MAILSVC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "MAILSVC_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
            "MAILSVC_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
            "MAILSVC_SMTP_HOST": settings.smtp_host,
            "MAILSVC_SMTP_PORT": str(settings.smtp_port),
            "MAILSVC_SMTP_TLS": "none",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def service_spec(name: str, port: int, env: dict[str, str]) -> ChildSpec:
    """``faststream run services.<name>.app:app`` on SERVICE_HOST:port."""
    argv = [sys.executable, "-m", "faststream", "run", f"services.{name}.app:app"]
    argv += ["--host", SERVICE_HOST, "--port", str(port)]
    service_env = {**env, "MAILSVC_HTTP_HOST": SERVICE_HOST, "MAILSVC_HTTP_PORT": str(port)}
    return ChildSpec(name, argv, service_env, stop_tier=TIER_SERVICES)


def catcher_spec(settings: Settings, env: dict[str, str]) -> ChildSpec:
    argv = [sys.executable, "-m", "shared.dev.catcher", "--host", settings.smtp_host]
    argv += ["--port", str(settings.smtp_port), "--outbox", str(outbox_dir(settings).resolve())]
    return ChildSpec("catcher", argv, env, stop_tier=TIER_CATCHER)


def banner(settings: Settings, ports: dict[str, int]) -> str:
    lines = [
        "mailsvc dev mode",
        f"  Kafka broker (Tansu)  {settings.kafka_bootstrap}",
        f"  SMTP catcher          {settings.smtp_host}:{settings.smtp_port}",
        f"  Outbox (.eml files)   {outbox_dir(settings).resolve()}",
    ]
    lines += [f"  {name:<20}  http://{SERVICE_HOST}:{port}/docs" for name, port in ports.items()]
    lines.append("Ctrl-C to stop")
    return "\n".join(lines)


def check_port_free(host: str, port: int, what: str) -> None:
    """Fail early (instead of talking to someone else's server) if host:port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            reason = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise OSError(exc.errno, f"{what} address {host}:{port}: {reason}") from exc


def run_dev(settings: Settings, http_base_port: int = 8101) -> int:
    """Run the whole system locally until Ctrl-C (or SIGTERM); return the exit code."""
    ports = service_ports(http_base_port)
    try:
        host, port = parse_bootstrap(settings.kafka_bootstrap)
        check_port_free(host, port, "Kafka")
        check_port_free(settings.smtp_host, settings.smtp_port, "SMTP")
        for name, service_port in ports.items():
            check_port_free(SERVICE_HOST, service_port, name)
        outbox_dir(settings).mkdir(parents=True, exist_ok=True)
        tansu_bin = resolve_tansu_bin(settings.data_dir.resolve() / "home")
    except Exception as exc:
        print(f"mailsvc dev: {exc}", file=sys.stderr)
        return EXIT_CHILD_DIED
    env = child_env(settings)
    width = max(len(name) for name in (*SERVICE_NAMES, "catcher", "tansu"))
    with Supervisor(name_width=width) as sup:
        sup.start(ChildSpec("tansu", tansu_command(tansu_bin, host, port), env, stop_tier=TIER_BROKER))
        try:
            topics = asyncio.run(
                prepare_broker(settings, BROKER_READY_TIMEOUT_S, should_abort=sup.should_abort)
            )
        except (BrokerError, OSError) as exc:
            if sup.stop_requested:
                return EXIT_OK
            dead = sup.dead_child()
            reason = f"{dead[0]} exited with status {dead[1]}" if dead else str(exc)
            sup.log("dev", f"Kafka broker not usable: {reason}")
            return EXIT_CHILD_DIED
        sup.log("dev", f"created {len(topics)} topics")
        sup.start(catcher_spec(settings, env))
        for name, service_port in ports.items():
            sup.start(service_spec(name, service_port, env))
        sup.log("dev", banner(settings, ports))
        return sup.wait()
