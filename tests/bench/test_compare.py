"""compare.py's own logic that needs no peer: missing sides, run-directory pruning."""

from __future__ import annotations

from pathlib import Path

from bench import compare


def test_a_missing_bench_of_ours_is_reported_not_guessed(tmp_path: Path) -> None:
    values, why = compare.run_ours("no_such_bench", ["--json"], tmp_path / "log")
    assert values is None
    assert why == "bench/no_such_bench.py does not exist yet"
    assert not compare.accepts_flag("no_such_bench", "--smtp")
    m = compare.ours_measurement("scan", "ours", 1000, (values, why))
    assert m.msgs_per_s is None and m.note == "missing: bench/no_such_bench.py does not exist yet"


def test_our_figures_become_a_measurement() -> None:
    got = ({"msgs_per_s": 900.0, "seconds": 1.1, "followups_ok": 190, "followups_total": 200}, "")
    m = compare.ours_measurement("scan", "ours", 1000, got)  # type: ignore[arg-type]
    assert (m.msgs_per_s, m.seconds, m.note) == (900.0, 1.1, "follow-ups right: 190/200")


def test_only_the_newest_run_directories_are_kept(tmp_path: Path) -> None:
    names = [f"20261127-1{n}0000" for n in range(5)]
    for name in [*names, "notes"]:
        (tmp_path / name).mkdir()
    compare.prune_runs(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names[-2:], "notes"])
