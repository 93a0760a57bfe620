"""Small helpers for driving a Django peer (a generated project in a private directory)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from bench.peers.venv import PeerEnv, PeerEnvError

RESULT_PREFIX = "BENCH-JSON "


def write_files(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def run_script(
    peer: PeerEnv,
    project: Path,
    script: str,
    *,
    log: Path,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 3600.0,
    poll: Callable[[], None] | None = None,
) -> dict[str, object]:
    """Run ``script`` (a file in ``project``) with the peer's python; return its BENCH-JSON line.

    ``poll`` is called every 50 ms while it runs (and may raise to give up).
    """
    env = peer.env({"PYTHONPATH": str(project), **dict(extra_env or {})})
    with open(log, "ab") as out, open(project / f"{Path(script).stem}.stdout", "wb+") as stdout:
        proc = subprocess.Popen(
            [str(peer.python), str(project / script)], cwd=project, env=env, stdout=stdout, stderr=out
        )
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None:
                if poll is not None:
                    poll()
                if time.monotonic() > deadline:
                    raise PeerEnvError(f"{peer.name}: {script} still running after {timeout:.0f} s")
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stdout.seek(0)
        text = stdout.read().decode(errors="replace")
    if proc.returncode != 0:
        raise PeerEnvError(f"{peer.name}: {script} failed ({proc.returncode}); see {log}")
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return dict(json.loads(line[len(RESULT_PREFIX) :]))
    raise PeerEnvError(f"{peer.name}: {script} printed no result line; see {log}")
