"""Pure parts of bench/compare.py: machine facts, parsing our benches' output, RESULT lines,
the Markdown summary and the chart data."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

MISSING = "missing"
Value = float | int | str | None


@dataclasses.dataclass(frozen=True)
class MachineFacts:
    cpu_model: str
    cores: int
    ram_gib: float
    python: str
    date: str  # UTC, ISO 8601, minutes

    def as_rows(self) -> list[tuple[str, str]]:
        return [
            ("CPU", self.cpu_model),
            ("cores", str(self.cores)),
            ("RAM", f"{self.ram_gib:.1f} GiB"),
            ("Python", self.python),
            ("date", self.date),
        ]


def machine_facts(proc: Path = Path("/proc"), now: datetime | None = None) -> MachineFacts:
    model = "unknown"
    try:
        for line in (proc / "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = 0.0
    try:
        found = re.search(r"^MemTotal:\s+(\d+) kB", (proc / "meminfo").read_text(), re.MULTILINE)
        ram = int(found.group(1)) / 1024 / 1024 if found else 0.0
    except OSError:
        pass
    when = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return MachineFacts(model, os.cpu_count() or 0, ram, platform.python_version(), when)


def parse_bench_output(text: str) -> dict[str, Value]:
    """The figures our bench printed: its last JSON-object line, else all its RESULT lines.

    ``RESULT k=v k2=v2`` lines are merged in order (a later value wins), values become floats
    where they parse. ValueError if there is neither.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("{") and line.endswith("}"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                return {str(k): v for k, v in data.items() if isinstance(v, (int, float, str)) or v is None}
    values: dict[str, Value] = {}
    found = False
    for line in lines:
        if not line.startswith("RESULT "):
            continue
        found = True
        for part in line.split()[1:]:
            key, sep, raw = part.partition("=")
            if not sep:
                continue
            try:
                values[key] = float(raw)
            except ValueError:
                values[key] = raw
    if not found:
        raise ValueError("no JSON object line and no RESULT line in the output")
    return values


def number(value: Value) -> float | None:
    """A positive finite rate, or None (missing / not a number / zero)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value > 0 and value != float("inf") else None


def ratio(ours: Value, peer: Value) -> float | None:
    a, b = number(ours), number(peer)
    return a / b if a is not None and b is not None else None


def _fmt(value: Value) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.1f}"
    text = str(value)
    return re.sub(r"\s+", "_", text) or MISSING


def result_line(name: str, values: Mapping[str, Value]) -> str:
    """``RESULT name k=v ...``; None -> ``missing``; floats with one decimal."""
    return " ".join(["RESULT", name, *(f"{key}={_fmt(value)}" for key, value in values.items())])


@dataclasses.dataclass(frozen=True)
class Measurement:
    comparison: str  # "bulk", "bulk_dkim", "scan"
    system: str  # "ours", "ours (DKIM)", "Mailman 3.3.10", ...
    msgs_per_s: float | None
    count: int
    seconds: float | None = None
    note: str = ""  # why missing, follow-up correctness, DKIM, ...


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_markdown(
    facts: MachineFacts,
    measurements: Sequence[Measurement],
    result_lines: Sequence[str],
    notes: Sequence[str] = (),
    chart: str | None = None,
) -> str:
    """The summary written to bench/results/summary.md."""
    out = ["# Side-by-side benchmark: mailsvc vs Mailman 3, django-newsletter, django-helpdesk", ""]
    out += ["| machine | |", "|---|---|"]
    out += [f"| {key} | {_cell(value)} |" for key, value in facts.as_rows()]
    out += [
        "",
        "| comparison | system | msgs/s | messages | seconds | notes |",
        "|---|---|---:|---:|---:|---|",
    ]
    for m in measurements:
        rate = f"{m.msgs_per_s:,.1f}" if m.msgs_per_s is not None else MISSING
        seconds = f"{m.seconds:,.1f}" if m.seconds is not None else ""
        out.append(
            f"| {m.comparison} | {_cell(m.system)} | {rate} | {m.count:,} | {seconds} | {_cell(m.note)} |"
        )
    out += ["", "```", *result_lines, "```"]
    if chart:
        out += ["", f"![messages per second]({chart})"]
    if notes:
        out += ["", *(f"- {_cell(note)}" for note in notes)]
    return "\n".join(out) + "\n"


def chart_data(measurements: Sequence[Measurement]) -> list[dict[str, object]]:
    """What the chart script plots: one bar per measured system, grouped by comparison."""
    return [
        {"comparison": m.comparison, "system": m.system, "msgs_per_s": m.msgs_per_s}
        for m in measurements
        if m.msgs_per_s is not None
    ]


# Run by the tools venv's python (matplotlib is not a project dependency): argv = data.json out.png
CHART_SCRIPT = """\
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows = json.load(open(sys.argv[1]))
groups = []
for row in rows:
    if row["comparison"] not in groups:
        groups.append(row["comparison"])
fig, axes = plt.subplots(len(groups), 1, figsize=(8, 1.2 + 1.1 * len(rows)), squeeze=False)
for ax, group in zip(axes[:, 0], groups):
    mine = [r for r in rows if r["comparison"] == group]
    labels = [r["system"] for r in mine]
    values = [r["msgs_per_s"] for r in mine]
    colors = ["#2b7bba" if r["system"].startswith("ours") else "#999999" for r in mine]
    bars = ax.barh(labels, values, color=colors)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_title(group)
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=3)
    ax.set_xlim(left=1, right=max(values) * 4)
axes[-1, 0].set_xlabel("messages per second (log scale, higher is better)")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
"""
