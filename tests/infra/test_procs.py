import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.servers.procs import ServerError, free_port, spawn, stop, wait_until


def dies_soon(pid: int, timeout: float = 5) -> bool:
    """SIGKILL to another process is delivered asynchronously: allow it a moment to die."""
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_children_die_with_a_sigkilled_parent(tmp_path):
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import time
            from pathlib import Path
            from tests.servers.procs import spawn
            child = spawn(["sleep", "300"], log_path=Path({str(tmp_path / "log")!r}))
            print(child.pid, flush=True)
            time.sleep(300)
        """),
        ],
        stdout=subprocess.PIPE,
        cwd=os.getcwd(),
    )
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert alive(child_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert dies_soon(child_pid)


def test_stop_kills_the_whole_group(tmp_path):
    log = tmp_path / "log"
    proc = spawn(["sh", "-c", "trap '' TERM; sleep 300 & echo $!; wait"], log_path=log)
    wait_until(lambda: log.read_text().strip() != "", what="sh", timeout=5)
    grandchild = int(log.read_text())
    stop(proc, timeout=0.5)  # TERM is ignored: SIGKILL after 0.5 s
    assert proc.returncode == -signal.SIGKILL
    assert dies_soon(grandchild)  # a zombie at most, waiting for init to reap it


def test_wait_until_reports_exit_and_log(tmp_path):
    log = tmp_path / "log"
    proc = spawn(["sh", "-c", "echo boom-happened; exit 3"], log_path=log)
    with pytest.raises(ServerError, match=r"(?s)exited with code 3.*boom-happened"):
        wait_until(lambda: False, what="demo", timeout=10, proc=proc, log_path=log)


def test_wait_until_times_out():
    with pytest.raises(ServerError, match="not ready after"):
        wait_until(lambda: 1 / 0, what="demo", timeout=0.2)
    assert 1024 < free_port() < 65536
