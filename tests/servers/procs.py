"""Process helpers shared by the real-server wrappers: spawn, stop, free ports, readiness."""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

PR_SET_PDEATHSIG = 1


class ServerError(RuntimeError):
    """A test server failed to start or to become ready."""


class Server:
    """start() / stop() (keeps data: start() again works) / close() (stop + delete temp
    files). As a context manager: start on enter (cleaning up if that fails), close on exit."""

    startup_seconds: float | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now.

    Picked below the kernel's ephemeral range, so that outgoing connections cannot grab it
    while a slow server (a JVM) is still starting.
    """
    high = _ephemeral_low() - 1
    for _ in range(50):
        port = random.randint(10_000, high) if high > 10_000 else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise ServerError("no free port on 127.0.0.1")


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:
        # Runs in the child after setpgid/setuid (a uid change would clear PDEATHSIG).
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _ids(user: str | None) -> tuple[int | None, int | None, list[int] | None]:
    if user is None:
        return None, None, None
    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid, []


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group, stdout+stderr appended to ``log_path``.

    The child gets SIGKILL when the spawning *thread* dies (PR_SET_PDEATHSIG), so servers
    do not outlive a SIGKILLed pytest. Spawn from the main thread. ``user`` switches uid/gid
    (root only).
    """
    uid, gid, groups = _ids(user)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [os.fspath(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            process_group=0,
            preexec_fn=_die_with_parent(os.getpid()),
            user=uid,
            group=gid,
            extra_groups=groups,
        )


def stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Send ``sig`` to the process group, wait, then SIGKILL whatever is left of the group."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
    interval: float = 0.05,
) -> float:
    """Poll ``check`` (exceptions count as "not yet") until true; return the seconds waited.

    Raises ServerError with the log tail if the process exits or ``timeout`` passes.
    """
    start = time.monotonic()
    last_error: BaseException | None = None
    while True:
        try:
            if check():
                return time.monotonic() - start
        except Exception as e:
            last_error = e
        waited = time.monotonic() - start
        exited = proc is not None and proc.poll() is not None
        if exited or waited > timeout:
            reason = (
                f"exited with code {proc.returncode}"
                if exited and proc is not None
                else f"not ready after {timeout:.0f} s"
            )
            log = f"\n--- tail of {log_path} ---\n{tail(log_path)}" if log_path else ""
            raise ServerError(f"{what} {reason} (last check error: {last_error!r}){log}")
        time.sleep(interval)


def read_greeting(host: str, port: int, prefix: bytes, timeout: float = 2.0) -> bool:
    """Connect and check that the server's first line starts with ``prefix``."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        return s.recv(512).startswith(prefix)


def unprivileged_user() -> str | None:
    """For root: a system user to run servers that refuse root (postgres, else nobody)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise ServerError("running as root but neither a 'postgres' nor a 'nobody' user exists")


def run(argv: Sequence[str | os.PathLike[str]], *, what: str, user: str | None = None) -> None:
    """Run a short setup command; raise ServerError with its output on failure."""
    uid, gid, groups = _ids(user)
    res = subprocess.run(
        [os.fspath(a) for a in argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        user=uid,
        group=gid,
        extra_groups=groups,
    )
    if res.returncode != 0:
        out = (res.stdout + res.stderr).decode(errors="replace")[-3000:]
        raise ServerError(f"{what} failed with code {res.returncode}:\n{out}")
