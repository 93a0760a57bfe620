"""The peer venv helper never touches the project's environment (nothing is installed here)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bench.peers import venv
from bench.peers.venv import PeerEnv, PeerEnvError


def test_cache_root_defaults_to_the_user_cache_and_honours_the_override(tmp_path: Path) -> None:
    assert venv.cache_root({}) == (Path.home() / ".cache" / "mailsvc" / "peers").resolve()
    assert venv.cache_root({"MAILSVC_PEERS_CACHE": str(tmp_path)}) == tmp_path.resolve()


def test_each_peer_gets_its_own_versioned_venv(tmp_path: Path) -> None:
    peer = PeerEnv("mailman", "3.3.10", ("mailman==3.3.10",), root=tmp_path)
    assert peer.venv == tmp_path / "mailman-3.3.10" / "venv"
    assert peer.python == peer.venv / "bin" / "python"
    assert not peer.installed()


def test_install_commands_use_the_peers_own_pip_never_the_projects(tmp_path: Path) -> None:
    peer = PeerEnv("x", "1", ("pkg==1.0",), root=tmp_path)
    create, install = peer.install_commands()
    assert create[1:3] == ["-m", "venv"] and create[-1] == str(peer.venv)
    assert install[0] == str(peer.python) and install[1:4] == ["-m", "pip", "install"]
    assert install[-1] == "pkg==1.0"
    project_venv = str(venv.PROJECT_ROOT / ".venv")
    for argv in (create, install):
        assert not any(arg.startswith(project_venv) for arg in argv)
        assert sys.executable not in argv or not sys.executable.startswith(project_venv)


def test_the_base_python_is_not_the_projects_venv() -> None:
    base = Path(venv.base_python())
    assert not base.resolve().is_relative_to(venv.PROJECT_ROOT.resolve())


@pytest.mark.parametrize("inside", [".venv", ".venv/peers", "bench/cache", "."])
def test_a_cache_inside_the_project_is_refused_before_anything_runs(inside: str) -> None:
    peer = PeerEnv("x", "1", ("pkg==1.0",), root=venv.PROJECT_ROOT / inside)
    before = sorted(p.name for p in venv.PROJECT_ROOT.iterdir())
    with pytest.raises(PeerEnvError, match="overlaps the project"):
        peer.ensure()
    assert sorted(p.name for p in venv.PROJECT_ROOT.iterdir()) == before
    assert not (venv.PROJECT_ROOT / inside / "x-1").exists()


def test_a_cache_containing_the_project_is_refused() -> None:
    with pytest.raises(PeerEnvError):
        venv.check_outside_project(venv.PROJECT_ROOT.parent)


def test_commands_run_without_the_projects_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project_bin = str(venv.PROJECT_ROOT / ".venv" / "bin")
    monkeypatch.setenv("VIRTUAL_ENV", str(venv.PROJECT_ROOT / ".venv"))
    monkeypatch.setenv("PYTHONPATH", str(venv.PROJECT_ROOT))
    monkeypatch.setenv("UV_PROJECT_ENVIRONMENT", "x")
    monkeypatch.setenv("PATH", os.pathsep.join([project_bin, "/usr/bin"]))
    peer = PeerEnv("x", "1", (), root=tmp_path)
    env = peer.env({"BENCH_DIR": "/tmp/b"})
    assert "VIRTUAL_ENV" not in env and "PYTHONPATH" not in env
    assert not any(key.startswith("UV_") for key in env)
    assert env["PATH"].split(os.pathsep) == [str(peer.venv / "bin"), "/usr/bin"]
    assert env["BENCH_DIR"] == "/tmp/b" and env["PYTHONNOUSERSITE"] == "1"


def test_a_failing_command_reports_its_output(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with pytest.raises(PeerEnvError, match="boom"):
        venv.run(["sh", "-c", "echo boom >&2; exit 3"], env=venv.scrubbed_env(), log=log, what="t")
    assert "[exit 3]" in log.read_text()
