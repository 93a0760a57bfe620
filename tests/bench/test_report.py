"""RESULT lines, parsing our benches' output, the Markdown summary and the chart data."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.peers.report import (
    MachineFacts,
    Measurement,
    chart_data,
    machine_facts,
    parse_bench_output,
    ratio,
    result_line,
    summary_markdown,
)

FACTS = MachineFacts("AMD EPYC Test", 2, 23.4, "3.11.7", "2026-11-27 18:00 UTC")


def test_result_line_formats_numbers_and_marks_missing_values() -> None:
    line = result_line(
        "bulk", {"ours_msgs_per_s": 1234.567, "mailman_msgs_per_s": None, "ratio": 30, "n": "a b"}
    )
    assert line == "RESULT bulk ours_msgs_per_s=1234.6 mailman_msgs_per_s=missing ratio=30 n=a_b"


def test_ratio_needs_two_positive_numbers() -> None:
    assert ratio(100.0, 4.0) == 25.0
    assert ratio(None, 4.0) is None
    assert ratio(100.0, 0) is None
    assert ratio("fast", 4.0) is None
    assert ratio(True, 1.0) is None


def test_parse_prefers_the_last_json_object_line() -> None:
    out = 'progress 1\n{"msgs_per_s": 1.0}\nnoise\n{"msgs_per_s": 812.5, "seconds": 12.3}\nRESULT msgs_per_s=3\n'
    assert parse_bench_output(out) == {"msgs_per_s": 812.5, "seconds": 12.3}


def test_parse_falls_back_to_the_result_lines_later_ones_winning() -> None:
    out = "RESULT msgs_per_s=5 tickets=900\nwarming up\nRESULT msgs_per_s=812.5 mode=dkim\nRESULT idle_p95_ms=40\n"
    assert parse_bench_output(out) == {
        "msgs_per_s": 812.5,
        "tickets": 900.0,
        "mode": "dkim",
        "idle_p95_ms": 40.0,
    }


@pytest.mark.parametrize("out", ["", "nothing useful\n", "{not json}\n", "[1, 2]\n"])
def test_parse_refuses_output_without_figures(out: str) -> None:
    with pytest.raises(ValueError):
        parse_bench_output(out)


def test_summary_has_machine_facts_a_row_per_measurement_and_the_result_lines() -> None:
    ms = [
        Measurement("bulk", "ours (DKIM)", 2500.0, 10_000, 4.0),
        Measurement("bulk", "Mailman 3.3.10", 40.0, 10_000, 250.0, "personalised | no DKIM"),
        Measurement("scan", "ours", None, 1_000, note="missing: bench/scan_import.py does not exist yet"),
    ]
    text = summary_markdown(FACTS, ms, ["RESULT bulk ratio=62.5"], ["a note"], "chart.png")
    for fact in ("AMD EPYC Test", "| cores | 2 |", "23.4 GiB", "3.11.7", "2026-11-27 18:00 UTC"):
        assert fact in text
    assert "| bulk | ours (DKIM) | 2,500.0 | 10,000 | 4.0 |  |" in text
    assert "| bulk | Mailman 3.3.10 | 40.0 | 10,000 | 250.0 | personalised \\| no DKIM |" in text
    assert "| scan | ours | missing | 1,000 |  | missing: bench/scan_import.py does not exist yet |" in text
    assert "RESULT bulk ratio=62.5" in text
    assert "![messages per second](chart.png)" in text
    assert "- a note" in text
    table = [line for line in text.splitlines() if line.startswith("| bulk") or line.startswith("| scan")]
    assert len(table) == 3
    assert all(len(re.findall(r"(?<!\\)\|", line)) == 7 for line in table)  # 6 columns


def test_chart_data_leaves_out_missing_figures() -> None:
    ms = [Measurement("bulk", "ours", None, 10), Measurement("bulk", "Mailman 3.3.10", 40.0, 10)]
    assert chart_data(ms) == [{"comparison": "bulk", "system": "Mailman 3.3.10", "msgs_per_s": 40.0}]


def test_machine_facts_read_proc(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Test CPU 9000\n")
    (tmp_path / "meminfo").write_text("MemTotal:       25165824 kB\nMemFree: 1 kB\n")
    facts = machine_facts(tmp_path, datetime(2026, 11, 27, 18, 5, 59, tzinfo=UTC))
    assert facts.cpu_model == "Test CPU 9000"
    assert facts.ram_gib == 24.0
    assert facts.date == "2026-11-27 18:05 UTC"
    assert facts.cores >= 1
