"""Private virtual environments for the peer systems, cached and reused across runs.

Each peer gets ``<cache>/<name>-<version>`` (default cache: ``~/.cache/mailsvc/peers``,
override with ``MAILSVC_PEERS_CACHE``), made with ``python3 -m venv`` and filled by that
venv's own pip with pinned requirements. The project's environment is never used: the venv
is built from the base interpreter, its commands run with VIRTUAL_ENV/PYTHONPATH/UV_* removed,
and a cache path inside the project's tree or its ``.venv`` is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Variables that would make a child process see the project's environment instead of its own.
_LEAKY = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "CONDA_PREFIX")
_MARKER = ".mailsvc-installed.json"


class PeerEnvError(RuntimeError):
    """A peer's virtual environment could not be created or used."""


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """Where peer venvs and peer state live: $MAILSVC_PEERS_CACHE or ~/.cache/mailsvc/peers."""
    env = os.environ if environ is None else environ
    if custom := env.get("MAILSVC_PEERS_CACHE"):
        return Path(custom).expanduser().resolve()
    return (Path.home() / ".cache" / "mailsvc" / "peers").resolve()


def base_python() -> str:
    """The interpreter the project's venv was made from (``python3`` is the fallback)."""
    base = getattr(sys, "_base_executable", None)
    if base and Path(base).exists() and not _inside(Path(base), PROJECT_ROOT):
        return str(base)
    found = shutil.which("python3", path=scrubbed_env().get("PATH"))
    if not found:
        raise PeerEnvError("no python3 found to create peer virtual environments")
    return found


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def check_outside_project(path: Path, project_root: Path = PROJECT_ROOT) -> None:
    """Refuse a peer venv/cache path inside the project tree (and so inside its .venv)."""
    if _inside(path, project_root) or _inside(project_root, path):
        raise PeerEnvError(f"{path} overlaps the project at {project_root}: peers must live elsewhere")


def scrubbed_env(extra: Mapping[str, str] | None = None, venv: Path | None = None) -> dict[str, str]:
    """os.environ without the variables that point at the project's environment.

    With ``venv``, its bin/ comes first on PATH and the project's .venv/bin is removed.
    """
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY and not k.startswith("UV_")}
    project_bins = {str((PROJECT_ROOT / ".venv" / "bin").resolve()), str(Path(sys.prefix) / "bin")}
    path = [
        p for p in env.get("PATH", "").split(os.pathsep) if p and str(Path(p).resolve()) not in project_bins
    ]
    if venv is not None:
        path.insert(0, str(venv / "bin"))
    env["PATH"] = os.pathsep.join(path)
    env["PYTHONNOUSERSITE"] = "1"
    env |= dict(extra or {})
    return env


@dataclasses.dataclass(frozen=True)
class PeerEnv:
    """A peer's venv: ``name``-``version`` under ``root`` with ``requirements`` (pinned)."""

    name: str
    version: str
    requirements: tuple[str, ...]
    root: Path = dataclasses.field(default_factory=cache_root)

    @property
    def path(self) -> Path:
        return self.root / f"{self.name}-{self.version}"

    @property
    def venv(self) -> Path:
        return self.path / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def bin(self, command: str) -> Path:
        return self.venv / "bin" / command

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return scrubbed_env(extra, self.venv)

    def install_commands(self) -> list[list[str]]:
        """The commands ensure() runs: create the venv, then pip install into it."""
        pip = [str(self.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        return [[base_python(), "-m", "venv", "--clear", str(self.venv)], [*pip, *self.requirements]]

    def installed(self) -> bool:
        marker = self.venv / _MARKER
        try:
            return json.loads(marker.read_text()) == list(self.requirements) and self.python.exists()
        except (OSError, ValueError):
            return False

    def ensure(self, log: Path | None = None) -> float:
        """Create and fill the venv unless already there; return the seconds spent (0 if cached).

        The full list of installed versions lands in ``<path>/freeze.txt``.
        """
        check_outside_project(self.path)
        if self.installed():
            return 0.0
        self.path.mkdir(parents=True, exist_ok=True)
        log = log or self.path / "install.log"
        start = time.monotonic()
        for argv in self.install_commands():
            run(argv, env=scrubbed_env(), log=log, what=f"installing {self.name}")
        freeze = [str(self.python), "-m", "pip", "freeze", "--disable-pip-version-check"]
        (self.path / "freeze.txt").write_text(run(freeze, env=scrubbed_env(), log=log, what="pip freeze"))
        (self.venv / _MARKER).write_text(json.dumps(list(self.requirements)))
        return time.monotonic() - start

    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        log: Path,
        extra_env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float | None = None,
        what: str = "",
    ) -> str:
        """Run a command with this venv's environment; return its stdout (log gets everything)."""
        return run(argv, env=self.env(extra_env), log=log, cwd=cwd, timeout=timeout, what=what or self.name)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str],
    log: Path,
    cwd: Path | None = None,
    timeout: float | None = None,
    what: str = "",
    stdin: bytes | None = None,
) -> str:
    """Run ``argv``; append its output to ``log``; PeerEnvError with the tail on failure."""
    args = [os.fspath(a) for a in argv]
    res = subprocess.run(
        args, env=dict(env), cwd=cwd, input=stdin, capture_output=True, timeout=timeout, check=False
    )
    out, err = res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace")
    with open(log, "a") as f:
        f.write(f"$ {' '.join(args)}\n{out}{err}\n[exit {res.returncode}]\n")
    if res.returncode != 0:
        raise PeerEnvError(
            f"{what}: {' '.join(args[:4])} ... failed ({res.returncode}):\n{(out + err)[-2500:]}"
        )
    return out
