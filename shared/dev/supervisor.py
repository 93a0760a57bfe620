"""Run child processes as one unit: output prefixed with the child's name, and all stop together.

Each child gets its own process group (so a terminal Ctrl-C reaches only the supervisor, which
then stops the children in order) and ``PR_SET_PDEATHSIG=SIGTERM`` (so a child does not outlive
the supervisor even when the supervisor is killed with SIGKILL). Stopping sends SIGTERM to every
child's process group (higher ``stop_tier`` first), waits up to ``stop_timeout`` seconds in
total, then sends SIGKILL to the groups.

Children must be started from the main thread: the parent-death signal fires when the *thread*
that forked the child exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, TextIO

PR_SET_PDEATHSIG = 1
EXIT_OK = 0
EXIT_CHILD_DIED = 1

_SignalHandler = Callable[[int, FrameType | None], Any] | int | None


@dataclass(frozen=True)
class ChildSpec:
    """How to start one child. ``env=None`` inherits the supervisor's environment.

    Children with a higher ``stop_tier`` are stopped first (services before the broker they
    need for a clean shutdown); children of one tier are stopped together.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    stop_tier: int = 0


def pdeathsig_preexec(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` that asks Linux to send ``sig`` to the child when its parent dies.

    libc and ``prctl`` are resolved here, before the fork, so the forked child only makes the
    system call. If the parent already died between fork and prctl, the child signals itself.
    """
    if not sys.platform.startswith("linux"):
        return lambda: None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    signum = int(sig)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signum)

    return preexec


class Supervisor:
    """Start children, relay their output, stop them all on a signal or when one of them dies.

    Use as a context manager: entering installs SIGINT/SIGTERM handlers (which only request a
    stop), leaving stops every child and restores the previous handlers.
    """

    def __init__(
        self,
        out: TextIO | None = None,
        stop_timeout: float = 10.0,
        poll_interval: float = 0.1,
        name_width: int = 8,
    ) -> None:
        self._out = out if out is not None else sys.stdout
        self._stop_timeout = stop_timeout
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._tiers: dict[str, int] = {}
        self._readers: list[threading.Thread] = []
        self._stop_event = threading.Event()
        self._stopped = False
        self._force = False
        self._previous_handlers: dict[int, _SignalHandler] = {}
        self._width = name_width

    # -- context manager -----------------------------------------------------------------------

    def __enter__(self) -> Supervisor:
        self.install_signal_handlers()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop_all()
        finally:
            self.restore_signal_handlers()

    def install_signal_handlers(self) -> None:
        """SIGINT and SIGTERM request a stop instead of raising. Main thread only."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopped:
            self._force = True  # a second Ctrl-C while stopping: kill right away
        self._stop_event.set()

    # -- state -----------------------------------------------------------------------------------

    @property
    def stop_requested(self) -> bool:
        return self._stop_event.is_set()

    def request_stop(self) -> None:
        self._stop_event.set()

    def pids(self) -> dict[str, int]:
        """PID (and process-group id) of every child started so far, by name."""
        return {name: proc.pid for name, proc in self._children.items()}

    def dead_child(self) -> tuple[str, int] | None:
        """The first child that has exited, as (name, exit code), or None if all still run."""
        for name, proc in self._children.items():
            code = proc.poll()
            if code is not None:
                return name, code
        return None

    def should_abort(self) -> bool:
        """True once a stop was requested or a child died: long start-up steps poll this."""
        return self.stop_requested or self.dead_child() is not None

    # -- output ----------------------------------------------------------------------------------

    def log(self, name: str, message: str) -> None:
        """Write ``message`` with the ``name |`` prefix, one prefixed line per line."""
        with self._lock:
            for line in message.splitlines() or [""]:
                self._out.write(f"{name:<{self._width}} | {line}\n")
            self._out.flush()

    def _relay(self, name: str, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                self.log(name, raw.decode("utf-8", errors="replace").rstrip("\r\n"))

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, spec: ChildSpec) -> subprocess.Popen[bytes]:
        """Start one child in its own process group; its stdout and stderr are relayed."""
        if spec.name in self._children:
            raise ValueError(f"a child named {spec.name!r} was already started")
        if self._stopped:
            raise RuntimeError("supervisor already stopped")
        env = dict(spec.env) if spec.env is not None else None
        proc = subprocess.Popen(
            list(spec.argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=spec.cwd,
            process_group=0,
            preexec_fn=pdeathsig_preexec(),
            close_fds=True,
        )
        self._children[spec.name] = proc
        self._tiers[spec.name] = spec.stop_tier
        self._width = max(self._width, len(spec.name))
        assert proc.stdout is not None
        reader = threading.Thread(
            target=self._relay, args=(spec.name, proc.stdout), name=f"relay-{spec.name}", daemon=True
        )
        reader.start()
        self._readers.append(reader)
        return proc

    def wait(self) -> int:
        """Block until SIGINT/SIGTERM or until a child exits, then stop all children.

        Returns 0 after a requested stop, 1 if a child died on its own.
        """
        code = EXIT_OK
        while not self.stop_requested:
            dead = self.dead_child()
            if dead is not None:
                name, status = dead
                self.log("dev", f"{name} exited unexpectedly (status {status}); stopping all")
                code = EXIT_CHILD_DIED
                break
            time.sleep(self._poll_interval)
        self.stop_all()
        return code

    def stop_all(self) -> None:
        """Stop every child: tier by tier (highest first), SIGTERM to each child's process
        group; once ``stop_timeout`` seconds have passed in total, SIGKILL to every group.

        A signal received meanwhile skips the wait. Idempotent.
        """
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + self._stop_timeout
        for tier in sorted(set(self._tiers.values()), reverse=True):
            members = [(n, p) for n, p in self._children.items() if self._tiers[n] == tier]
            for _, proc in reversed(members):
                _signal_group(proc.pid, signal.SIGTERM)
            for name, proc in members:
                if not self._wait_exit(proc, deadline):
                    self.log("dev", f"{name} did not stop within {self._stop_timeout:g} s; killing")
        for proc in self._children.values():
            # Also reaches grandchildren left in the group after the leader exited.
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        for reader in self._readers:
            reader.join(timeout=2.0)

    def _wait_exit(self, proc: subprocess.Popen[bytes], deadline: float) -> bool:
        """Wait for ``proc`` until ``deadline`` (or a forced stop); True if it exited."""
        while proc.poll() is None:
            if self._force or time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
