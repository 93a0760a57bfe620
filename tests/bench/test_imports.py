"""Bench scripts are not run in CI, so at least make sure each still imports (catches renames)."""

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__"))
def test_bench_script_imports(name):
    importlib.import_module(f"bench.{name}")
