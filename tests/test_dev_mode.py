"""Dev mode (``mailsvc dev``): mail catcher, supervisor, Tansu set-up, and the whole thing end to end."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from shared.dev.catcher import (
    SUBJECT_LIMIT,
    eml_filename,
    sanitize,
    start_catcher,
    summary_line,
)
from shared.dev.supervisor import ChildSpec, Supervisor
from shared.dev.tansu import parse_bootstrap, prepare_broker, tansu_command
from shared.kafka_admin import system_topics
from shared.settings import SERVICE_NAMES, Settings
from shared.topics import ALL_TOPICS, CONSUMED_TOPICS

REPO = Path(__file__).resolve().parents[1]
EML_NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}\.eml$")
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


# -- helpers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_block(count: int) -> int:
    """A base port such that base .. base + count - 1 are all free."""
    for _ in range(100):
        base = free_port()
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no block of free ports")


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of a process from /proc/PID/stat, None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """PID -> start time of every live descendant of ``root`` (found by walking /proc)."""
    parents: dict[int, int] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None and stat[1] not in "ZX":
                parents[int(entry.name)], starts[int(entry.name)] = stat[0], stat[2]
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = starts[pid]
                frontier.append(pid)
    return found


def is_alive(pid: int, start_time: int) -> bool:
    """Still running (not a zombie, and not a recycled PID)?"""
    stat = proc_stat(pid)
    return stat is not None and stat[2] == start_time and stat[1] not in "ZX"


def survivors(family: dict[int, int]) -> list[int]:
    return [pid for pid, start in family.items() if is_alive(pid, start)]


def kill_all(family: dict[int, int]) -> None:
    for pid in survivors(family):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def clean_env(**overrides: str) -> dict[str, str]:
    """Our environment without any MAILSVC_* setting of the developer or CI, plus overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSVC_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if not os.access(Path.home(), os.W_OK):
        env["HOME"] = overrides.pop("HOME_FALLBACK", "/tmp")
    overrides.pop("HOME_FALLBACK", None)
    env.update(overrides)
    return env


def tail(path: Path, lines: int = 80) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no output)"


# -- catcher -----------------------------------------------------------------------------------


def test_sanitize_removes_controls_and_truncates():
    assert sanitize("a\r\nb\x1b[31mc\x1b[0m\x07\u202e d\u2028e\x00") == "a bc d e"
    assert sanitize("x" * 500, limit=20) == "x" * 19 + "…"
    assert sanitize("\x1b]0;title\x07visible") == "visible"


def test_eml_filename_shape():
    assert EML_NAME.match(eml_filename())
    assert eml_filename() != eml_filename()


def test_summary_line_sanitises_envelope():
    line = summary_line(
        datetime(2025, 1, 2, 3, 4, 5),
        "evil\x1b[2J\r\n@example.test",
        ["a@example.test", "b\x07\n@example.test"],
        "Subject\r\nBcc: injected",
    )
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x07" not in line
    assert line.startswith("2025-01-02T03:04:05Z")
    assert "Subject Bcc: injected" in line


async def test_catcher_stores_message_as_eml(tmp_path):
    out = io.StringIO()
    port = free_port()
    outbox = tmp_path / "outbox"
    server = await start_catcher("127.0.0.1", port, outbox, out)
    try:
        msg = EmailMessage()
        msg["From"] = "sender@example.test"
        msg["To"] = "rcpt@example.test"
        msg["Subject"] = "Welcome aboard"
        msg.set_content("Hello there")
        await aiosmtplib.send(
            msg,
            hostname="127.0.0.1",
            port=port,
            recipients=["rcpt@example.test", "bcc@example.test"],
        )
    finally:
        server.close()
        await server.wait_closed()
    files = list(outbox.iterdir())
    assert len(files) == 1, files
    assert EML_NAME.match(files[0].name)
    content = files[0].read_bytes()
    assert b"Subject: Welcome aboard" in content and b"Hello there" in content
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert "sender@example.test" in lines[0]
    assert "rcpt@example.test, bcc@example.test" in lines[0]
    assert lines[0].endswith("subject: Welcome aboard")


async def test_catcher_prints_hostile_subject_sanitised_and_names_files_safely(tmp_path):
    out = io.StringIO()
    port = free_port()
    outbox = tmp_path / "outbox"
    hostile = (
        b"From: x@example.test\r\n"
        b"To: y@example.test\r\n"
        b"Message-ID: <../../../etc/passwd@example.test>\r\n"
        b"Subject: ../../evil.eml \x1b[2J\x1b[31mRED\x1b[0m \x07bell "
        b"=?utf-8?q?split=0D=0Aline=1B=5B1m?= \xe2\x80\xae" + b"A" * 400 + b"\r\n"
        b"\r\n"
        b"body\r\n"
    )
    server = await start_catcher("127.0.0.1", port, outbox, out)
    try:
        await aiosmtplib.send(
            hostile, sender="x@example.test", recipients=["y@example.test"],
            hostname="127.0.0.1", port=port,
        )  # fmt: skip
    finally:
        server.close()
        await server.wait_closed()
    printed = out.getvalue()
    assert printed.count("\n") == 1 and printed.endswith("\n")
    line = printed[:-1]
    assert not any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 for ch in line), repr(line)
    assert "\u202e" not in line
    subject = line.split("subject: ", 1)[1]
    assert len(subject) <= SUBJECT_LIMIT
    assert subject.startswith("../../evil.eml RED bell split line")
    # Only the catcher's own name, inside the outbox, no temp files left behind.
    assert [p.name for p in tmp_path.iterdir()] == ["outbox"]
    files = list(outbox.iterdir())
    assert len(files) == 1 and EML_NAME.match(files[0].name)
    assert files[0].read_bytes().endswith(b"body\r\n")


def test_catcher_runs_standalone(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    env = clean_env(MAILSVC_DATA_DIR=str(data), MAILSVC_SMTP_PORT=str(port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.dev.catcher"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return True
            except OSError:
                return False

        assert wait_for(listening, 20), "catcher did not start listening"
        msg = EmailMessage()
        msg["From"] = "a@example.test"
        msg["To"] = "b@example.test"
        msg["Subject"] = "standalone works"
        msg.set_content("hi")
        asyncio.run(aiosmtplib.send(msg, hostname="127.0.0.1", port=port))
        outbox = data / "outbox"
        assert wait_for(lambda: any(outbox.glob("*.eml")), 10)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert "subject: standalone works" in output


# -- supervisor --------------------------------------------------------------------------------

SUPERVISOR_SCRIPT = """
import os, sys
from pathlib import Path
from shared.dev.supervisor import ChildSpec, Supervisor
sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
with Supervisor(stop_timeout=5) as sup:
    for i in range(3):
        sup.start(ChildSpec(f"sleeper{i}", sleeper))
    pids = Path(sys.argv[1])
    pids.with_suffix(".tmp").write_text(" ".join(map(str, sup.pids().values())))
    pids.with_suffix(".tmp").rename(pids)
    sys.exit(sup.wait())
"""


def start_supervisor_script(tmp_path: Path) -> tuple[subprocess.Popen[bytes], dict[int, int]]:
    script = tmp_path / "sup.py"
    script.write_text(SUPERVISOR_SCRIPT)
    pid_file = tmp_path / "pids.txt"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(pid_file)],
        env=clean_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert wait_for(pid_file.exists, 20), "supervisor script did not start its children"
    pids = [int(p) for p in pid_file.read_text().split()]
    family = {}
    for pid in pids:
        stat = proc_stat(pid)
        assert stat is not None and stat[0] == proc.pid
        family[pid] = stat[2]
    assert len(family) == 3
    return proc, family


def test_supervisor_stops_all_children_on_sigint(tmp_path):
    proc, family = start_supervisor_script(tmp_path)
    try:
        for pid in family:
            assert os.getpgid(pid) == pid, "each child leads its own process group"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        assert wait_for(lambda: not survivors(family), 3), survivors(family)
    finally:
        proc.kill()
        kill_all(family)


def test_children_die_when_supervisor_is_killed(tmp_path):
    proc, family = start_supervisor_script(tmp_path)
    try:
        proc.kill()  # SIGKILL: no clean-up code runs, only PR_SET_PDEATHSIG helps
        proc.wait(timeout=5)
        assert wait_for(lambda: not survivors(family), 5), survivors(family)
    finally:
        kill_all(family)


def test_supervisor_stops_others_when_a_child_dies():
    out = io.StringIO()
    with Supervisor(out=out, stop_timeout=5) as sup:
        sleeper = sup.start(ChildSpec("sleeper", SLEEPER))
        sup.start(
            ChildSpec(
                "crasher",
                [sys.executable, "-c", "import sys, time; print('bye'); time.sleep(0.5); sys.exit(3)"],
            )
        )
        started = time.monotonic()
        code = sup.wait()
    assert code == 1
    assert time.monotonic() - started < 8
    assert sleeper.poll() is not None
    text = out.getvalue()
    assert "crasher  | bye" in text
    assert "crasher exited unexpectedly (status 3)" in text


def test_supervisor_kills_a_child_that_ignores_sigterm():
    out = io.StringIO()
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    sup = Supervisor(out=out, stop_timeout=1)
    proc = sup.start(ChildSpec("stubborn", [sys.executable, "-c", stubborn]))
    try:
        assert wait_for(lambda: "stubborn | ready" in out.getvalue(), 20)
        started = time.monotonic()
        sup.stop_all()
        assert 0.9 <= time.monotonic() - started < 5
        assert proc.returncode == -signal.SIGKILL
        assert "did not stop within 1 s; killing" in out.getvalue()
    finally:
        sup.stop_all()


def test_supervisor_prefixes_every_line():
    out = io.StringIO()
    sup = Supervisor(out=out, name_width=6)
    proc = sup.start(ChildSpec("talker", [sys.executable, "-c", "print('one\\ntwo')"]))
    proc.wait(timeout=20)
    sup.stop_all()
    assert out.getvalue() == "talker | one\ntalker | two\n"


# -- Tansu -------------------------------------------------------------------------------------


def test_parse_bootstrap():
    assert parse_bootstrap("127.0.0.1:9092") == ("127.0.0.1", 9092)
    assert parse_bootstrap("PLAINTEXT://kafka:19092,other:9092") == ("kafka", 19092)
    assert parse_bootstrap("[::1]:9093") == ("::1", 9093)
    assert parse_bootstrap("localhost") == ("localhost", 9092)
    with pytest.raises(ValueError):
        parse_bootstrap("host:0")


async def test_tansu_gets_every_topic_and_dlq_with_three_partitions(tmp_path):
    from aiokafka.admin import AIOKafkaAdminClient

    from shared.dev.tansu import resolve_tansu_bin

    port = free_port()
    settings = Settings(data_dir=tmp_path, kafka_bootstrap=f"127.0.0.1:{port}", kafka_topic_prefix="dev.")
    binary = resolve_tansu_bin(tmp_path / "home")
    proc = subprocess.Popen(
        tansu_command(binary, "127.0.0.1", port),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        created = await prepare_broker(settings, timeout=30)
        assert len(created) == len(ALL_TOPICS) + len(CONSUMED_TOPICS) == len(set(created))
        assert "dev.mail.outbound.transactional.dlq" in created
        assert created == system_topics(settings)
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(created)
        finally:
            await admin.close()
        assert {t["topic"]: len(t["partitions"]) for t in described} == dict.fromkeys(created, 3)
        await prepare_broker(settings, timeout=5)  # idempotent
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- end to end --------------------------------------------------------------------------------


def test_mailsvc_dev_end_to_end(tmp_path):
    data = tmp_path / "data"
    http_base = free_port_block(len(SERVICE_NAMES))
    env = clean_env(
        MAILSVC_DATA_DIR=str(data),
        MAILSVC_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        MAILSVC_SMTP_HOST="127.0.0.1",
        MAILSVC_SMTP_PORT=str(free_port()),
        HOME_FALLBACK=str(tmp_path / "home"),
    )
    log_path = tmp_path / "dev.log"
    family: dict[int, int] = {}
    with log_path.open("wb") as log:
        dev = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "dev", "--http-base-port", str(http_base)],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        urls = [f"http://127.0.0.1:{http_base + i}/healthz" for i in range(len(SERVICE_NAMES))]

        def healthy() -> bool:
            assert dev.poll() is None, f"mailsvc dev exited early:\n{tail(log_path)}"
            try:
                return all(httpx.get(url, timeout=2).status_code == 200 for url in urls)
            except httpx.HTTPError:
                return False

        assert wait_for(healthy, 180, interval=0.5), f"services not healthy:\n{tail(log_path)}"
        family = descendants(dev.pid)
        assert len(family) >= 5, family  # tansu, catcher, three services

        sent = subprocess.run(
            [sys.executable, "-m", "shared.cli", "send-test",
             "--to", "someone@example.test", "--subject", "hello dev"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stdout + sent.stderr

        outbox = data / "outbox"

        def delivered() -> bool:
            return any(b"hello dev" in p.read_bytes() for p in outbox.glob("*.eml"))

        assert wait_for(delivered, 120, interval=0.5), f"no .eml in outbox:\n{tail(log_path)}"
        assert all(EML_NAME.match(p.name) for p in outbox.iterdir())

        family.update(descendants(dev.pid))
        dev.send_signal(signal.SIGINT)
        assert dev.wait(timeout=40) == 0, tail(log_path)
        assert wait_for(lambda: not survivors(family), 3), (
            f"left behind: {survivors(family)}\n{tail(log_path)}"
        )
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGINT)
            try:
                dev.wait(timeout=20)
            except subprocess.TimeoutExpired:
                dev.kill()
                dev.wait()
        kill_all(family)


def test_supervisor_stops_higher_tiers_first():
    out = io.StringIO()
    sup = Supervisor(out=out, stop_timeout=10)
    broker = sup.start(ChildSpec("broker", SLEEPER, stop_tier=0))
    service = (
        "import os, signal, sys, time\n"
        "def bye(*_):\n"
        "    time.sleep(0.3)\n"
        "    os.kill(int(sys.argv[1]), 0)  # raises if the broker is already gone\n"
        "    print('broker still up', flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    sup.start(ChildSpec("service", [sys.executable, "-c", service, str(broker.pid)], stop_tier=1))
    try:
        assert wait_for(lambda: "service  | ready" in out.getvalue(), 20)
        sup.stop_all()
        assert "service  | broker still up" in out.getvalue()
        assert broker.returncode == -signal.SIGTERM
    finally:
        sup.stop_all()
