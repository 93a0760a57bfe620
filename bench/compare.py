"""Our benchmarks side by side with the peers users would otherwise pick, in one run.

    uv run python bench/compare.py [--quick] [--recipients N] [--messages N] [--only bulk,scan]

Comparisons (same machine, same run, same message, same Postfix smtp-sink / Dovecot folder):
  bulk       ours (unsigned and DKIM) vs GNU Mailman 3 core (personalised, no DKIM) and
             django-newsletter (unsigned); ratio = ours with DKIM / Mailman
  bulk_dkim  ours with DKIM vs django-newsletter signing through django-dkim (RSA-2048)
  scan       ours vs django-helpdesk ``get_email`` importing an IMAP folder into tickets,
             plus follow-up correctness (ticket tag in subject, In-Reply-To, References)
Defaults: 10,000 recipients and 2,000 inbox mails; --quick: 1,000 and 1,000. Peers install
into their own venvs under ~/.cache/mailsvc/peers (MAILSVC_PEERS_CACHE), reused across runs.
Prints one RESULT line per comparison and writes bench/results/summary.md, summary.json and
chart.png (matplotlib from a separate tools venv in that cache, never the project's).

Our side is run as subprocesses from the repository root with this interpreter:
  python -m bench.mass_send --recipients N --size 3000 --json            (DKIM-signed)
  python -m bench.mass_send --recipients N --size 3000 --no-dkim --json
  python -m bench.scan_import --messages N --json
mass_send may also accept ``--smtp HOST:PORT`` (detected through its --help): it is then given
the very smtp-sink the peers send to. Each prints, as its last JSON-object line (or a final
``RESULT k=v ...`` line), at least ``msgs_per_s`` and ideally ``seconds``; scan_import may
add ``followups_ok`` and ``followups_total``. A missing script or a failing run is reported
as missing, never guessed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/compare.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.peers import django_helpdesk, django_newsletter, imapfill, mailman, workload
from bench.peers.report import (
    CHART_SCRIPT,
    Measurement,
    Value,
    chart_data,
    machine_facts,
    number,
    parse_bench_output,
    ratio,
    result_line,
    summary_markdown,
)
from bench.peers.venv import PeerEnv, PeerEnvError, cache_root
from shared.mail.dkim import DkimAlgorithm, generate_key
from tests.servers.dovecot import DovecotServer
from tests.servers.procs import ServerError
from tests.servers.smtp import PostfixSmtpSink

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TOOLS = PeerEnv("tools", "matplotlib-3.11.2", ("matplotlib==3.11.2",))
COMPARISONS = ("bulk", "bulk_dkim", "scan")
OURS_TIMEOUT_S = 1800.0


def say(text: str) -> None:
    print(f"[compare] {text}", flush=True)


def run_ours(module: str, args: list[str], log: Path) -> tuple[dict[str, Value] | None, str]:
    """Run ``python -m bench.<module> ARGS``; (its figures, "") or (None, why it is missing)."""
    script = REPO / "bench" / f"{module}.py"
    if not script.exists():
        return None, f"bench/{module}.py does not exist yet"
    argv = [sys.executable, "-m", f"bench.{module}", *args]
    try:
        res = subprocess.run(argv, cwd=REPO, capture_output=True, timeout=OURS_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return None, f"bench.{module} {' '.join(args)} still running after {OURS_TIMEOUT_S:.0f} s"
    out, err = res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace")
    with open(log, "a") as f:
        f.write(f"$ {' '.join(argv)}\n{out}{err}\n[exit {res.returncode}]\n")
    if res.returncode != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        tail = " ".join(lines[-1].split())[:300] if lines else "(no output)"
        return None, f"bench.{module} {' '.join(args)} exited {res.returncode}: {tail}"
    try:
        values = parse_bench_output(out)
    except ValueError as e:
        return None, f"bench.{module}: {e}"
    if number(values.get("msgs_per_s")) is None:
        return None, f"bench.{module} printed no msgs_per_s (got {sorted(values)})"
    return values, ""


def accepts_flag(module: str, flag: str) -> bool:
    """Whether ``python -m bench.<module> --help`` mentions ``flag`` (optional extensions)."""
    if not (REPO / "bench" / f"{module}.py").exists():
        return False
    argv = [sys.executable, "-m", f"bench.{module}", "--help"]
    try:
        res = subprocess.run(argv, cwd=REPO, capture_output=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        return False
    return res.returncode == 0 and flag in res.stdout.decode(errors="replace")


def ours_measurement(
    comparison: str, system: str, count: int, got: tuple[dict[str, Value] | None, str]
) -> Measurement:
    values, why = got
    if values is None:
        return Measurement(comparison, system, None, count, note=f"missing: {why}")
    seconds = number(values.get("seconds"))
    note = ""
    if number(values.get("followups_total")) is not None:
        note = f"follow-ups right: {values.get('followups_ok')}/{values.get('followups_total')}"
    return Measurement(comparison, system, number(values["msgs_per_s"]), count, seconds, note)


def peer_step(name: str, fn: Callable[[], Measurement], failed: Callable[[str], Measurement]) -> Measurement:
    say(f"{name} ...")
    start = time.monotonic()
    try:
        m = fn()
    except (PeerEnvError, ServerError, OSError, subprocess.SubprocessError) as e:
        say(f"{name} FAILED: {e}")
        return failed(f"failed: {str(e).splitlines()[0][:200]}")
    say(f"{name}: {m.msgs_per_s or 0:,.1f} msg/s ({m.note}) [{time.monotonic() - start:.0f} s in all]")
    return m


def _took(what: str, seconds: float) -> str:
    return f"{what} {seconds:.0f} s" if seconds > 0 else f"{what}: cached"


def bulk_peers(
    recipients: int, sink: PostfixSmtpSink, work: Path, key: Path, want_dkim: bool, want_plain: bool
) -> tuple[list[Measurement], list[Measurement]]:
    plain: list[Measurement] = []
    signed: list[Measurement] = []

    def mailman_run() -> Measurement:
        r = mailman.run_bulk(recipients, sink, work)
        setup = f"{_took('install', r.install_s)}, {_took('members added', r.members_add_s)}"
        note = f"personalised, no DKIM; {setup}"
        return Measurement("bulk", "Mailman 3.3.10", r.msgs_per_s, recipients, r.seconds, note)

    def newsletter_run(dkim: bool) -> Callable[[], Measurement]:
        def go() -> Measurement:
            r = django_newsletter.run_bulk(recipients, sink, work, dkim_key=key if dkim else None)
            note = ("DKIM RSA-2048 (django-dkim)" if dkim else "unsigned") + (
                f"; {_took('install', r.install_s)}, {_took('subscribers', r.setup_s)}"
            )
            system = "django-newsletter 1.2.1" + (" (DKIM)" if dkim else "")
            return Measurement(
                "bulk_dkim" if dkim else "bulk", system, r.msgs_per_s, recipients, r.seconds, note
            )

        return go

    if want_plain:
        plain.append(
            peer_step(
                "Mailman",
                mailman_run,
                lambda why: Measurement("bulk", "Mailman 3.3.10", None, recipients, note=why),
            )
        )
        plain.append(
            peer_step(
                "django-newsletter unsigned",
                newsletter_run(False),
                lambda why: Measurement("bulk", "django-newsletter 1.2.1", None, recipients, note=why),
            )
        )
    if want_dkim:
        signed.append(
            peer_step(
                "django-newsletter DKIM",
                newsletter_run(True),
                lambda why: Measurement(
                    "bulk_dkim", "django-newsletter 1.2.1 (DKIM)", None, recipients, note=why
                ),
            )
        )
    return plain, signed


def scan_peer(messages: int, work: Path) -> tuple[Measurement, dict[str, Value]]:
    extra: dict[str, Value] = {}

    def go() -> Measurement:
        wl = workload.inbox_workload(messages, workload.find_corpus(REPO), django_helpdesk.tag)
        with DovecotServer(users={"helpdesk": "helpdesk-bench-pw"}) as dv:
            start = time.monotonic()
            count = imapfill.fill_folder(dv.host, dv.imap_port, "helpdesk", "helpdesk-bench-pw", wl.messages)
            filled = time.monotonic() - start
            say(f"IMAP folder filled: {count} mails ({len(wl.corpus)} from the corpus) in {filled:.1f} s")
            imap = (dv.host, dv.imap_port, "helpdesk", "helpdesk-bench-pw", "INBOX")
            r = django_helpdesk.run_import(wl, imap, work)
        ok, total = sum(r.followups_ok.values()), sum(r.followups.values())
        kinds = ", ".join(f"{k} {r.followups_ok[k]}/{r.followups[k]}" for k in r.followups)
        extra.update({"django_helpdesk_followups_ok": ok, "followups_total": total})
        note = (
            f"follow-ups right: {ok}/{total} ({kinds}); {r.tickets} tickets; "
            f"{r.poison_messages} mail(s) aborted get_email (removed, rerun); {_took('install', r.install_s)}"
        )
        return Measurement("scan", "django-helpdesk 2.6.1", r.msgs_per_s, messages, r.seconds, note)

    m = peer_step(
        "django-helpdesk",
        go,
        lambda why: Measurement("scan", "django-helpdesk 2.6.1", None, messages, note=why),
    )
    return m, extra


def prune_runs(runs: Path, keep: int = 3) -> None:
    """Delete all but the newest ``keep`` run directories (peer data and logs of old runs)."""
    if not runs.is_dir():
        return
    old = sorted(
        (p for p in runs.iterdir() if p.is_dir() and re.fullmatch(r"\d{8}-\d{6}", p.name)), reverse=True
    )
    for path in old[keep:]:
        shutil.rmtree(path, ignore_errors=True)


def render_chart(measurements: list[Measurement], work: Path, png: Path) -> str:
    """Draw the chart through the tools venv; "" on success, else why not."""
    data = chart_data(measurements)
    if not data:
        return "no figures to chart"
    try:
        TOOLS.ensure()
        script = work / "chart.py"
        script.write_text(CHART_SCRIPT)
        data_path = work / "chart.json"
        data_path.write_text(json.dumps(data))
        TOOLS.run([TOOLS.python, script, data_path, png], log=work / "chart.log", what="chart")
    except PeerEnvError as e:
        return str(e).splitlines()[0]
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,000 recipients and 1,000 inbox mails")
    parser.add_argument("--recipients", type=int, help="bulk list size (default 10,000)")
    parser.add_argument("--messages", type=int, help="inbox mails (default 2,000; at least 10)")
    parser.add_argument(
        "--only", default=",".join(COMPARISONS), help="comma-separated subset of " + ",".join(COMPARISONS)
    )
    parser.add_argument("--skip-ours", action="store_true", help="peers only (our side reported as missing)")
    args = parser.parse_args()
    only = {c.strip() for c in args.only.split(",") if c.strip()}
    if unknown := only - set(COMPARISONS):
        parser.error(f"unknown comparison(s): {', '.join(sorted(unknown))}")
    recipients = args.recipients or (1_000 if args.quick else 10_000)
    messages = args.messages or (1_000 if args.quick else 2_000)
    if recipients < 1 or messages < 10:
        parser.error("--recipients must be >= 1 and --messages >= 10")

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    facts = machine_facts()
    prune_runs(cache_root() / "runs", keep=2)
    work = cache_root() / "runs" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    ours_log = work / "ours.log"
    say(f"work dir {work}; {recipients:,} recipients, {messages:,} inbox mails")

    skipped: tuple[dict[str, Value] | None, str] = (None, "skipped (--skip-ours)")
    ours_plain = ours_dkim = ours_scan = skipped
    measurements: list[Measurement] = []
    lines: list[str] = []
    summary: dict[str, object] = {"facts": facts.__dict__, "recipients": recipients, "messages": messages}

    if only & {"bulk", "bulk_dkim"}:
        key = work / "dkim-bench.pem"
        key.write_bytes(generate_key("bench.example.test", "bench", DkimAlgorithm.RSA).private_pem)
        key.chmod(0o600)
        with PostfixSmtpSink(count=True) as sink:
            if not args.skip_ours:
                bulk_args = ["--recipients", str(recipients), "--size", "3000", "--json"]
                if accepts_flag("mass_send", "--smtp"):  # optional: then ours uses this very sink
                    bulk_args += ["--smtp", f"{sink.host}:{sink.port}"]
                if "bulk" in only:
                    say("ours: bulk unsigned ...")
                    ours_plain = run_ours("mass_send", [*bulk_args, "--no-dkim"], ours_log)
                say("ours: bulk DKIM ...")
                ours_dkim = run_ours("mass_send", bulk_args, ours_log)
            plain, signed = bulk_peers(recipients, sink, work, key, "bulk_dkim" in only, "bulk" in only)
        if "bulk" in only:
            ours_p = ours_measurement("bulk", "ours", recipients, ours_plain)
            ours_d = ours_measurement("bulk", "ours (DKIM)", recipients, ours_dkim)
            measurements += [ours_p, ours_d, *plain]
            mm, nl = plain[0], plain[1]
            lines.append(
                result_line(
                    "bulk",
                    {
                        "ours_msgs_per_s": ours_p.msgs_per_s,
                        "ours_dkim_msgs_per_s": ours_d.msgs_per_s,
                        "mailman_msgs_per_s": mm.msgs_per_s,
                        "ratio": ratio(ours_d.msgs_per_s, mm.msgs_per_s),
                        "django_newsletter_unsigned_msgs_per_s": nl.msgs_per_s,
                    },
                )
            )
        if "bulk_dkim" in only:
            ours_d = ours_measurement("bulk_dkim", "ours (DKIM)", recipients, ours_dkim)
            measurements += [ours_d, *signed]
            lines.append(
                result_line(
                    "bulk_dkim",
                    {
                        "ours_msgs_per_s": ours_d.msgs_per_s,
                        "django_newsletter_msgs_per_s": signed[0].msgs_per_s,
                        "ratio": ratio(ours_d.msgs_per_s, signed[0].msgs_per_s),
                    },
                )
            )
    if "scan" in only and not args.skip_ours:
        say("ours: inbox import ...")
        ours_scan = run_ours("scan_import", ["--messages", str(messages), "--json"], ours_log)
    if "scan" in only:
        peer, extra = scan_peer(messages, work)
        ours_s = ours_measurement("scan", "ours", messages, ours_scan)
        measurements += [ours_s, peer]
        values: dict[str, Value] = {
            "ours_msgs_per_s": ours_s.msgs_per_s,
            "django_helpdesk_msgs_per_s": peer.msgs_per_s,
            "ratio": ratio(ours_s.msgs_per_s, peer.msgs_per_s),
        }
        if ours_scan[0] is not None and "followups_ok" in ours_scan[0]:
            values["ours_followups_ok"] = ours_scan[0]["followups_ok"]
        values |= extra
        lines.append(result_line("scan", values))

    missing = [f"{m.system} ({m.comparison}): {m.note}" for m in measurements if m.msgs_per_s is None]
    chart_png = RESULTS / "chart.png"
    chart_error = render_chart(measurements, work, chart_png)
    notes = [
        "Same message and recipients for every system (bench/peers/workload.py): ~3 KB text, "
        "greeting with the name and footer with the address per recipient; one Postfix smtp-sink.",
        "Mailman: clock starts when `mailman inject` has queued the post (its CLI start-up not counted), "
        "stops when the sink counted the last copy.",
        "django-newsletter: one SMTP connection per message (its design); clock from submit_newsletter's "
        "start (Django start-up excluded) to the sink's last count.",
        "django-helpdesk: its best case - SQLite synchronous=OFF + WAL, acknowledgement mails rendered "
        "but not sent (dummy backend), Django start-up excluded; a mail that makes get_email give up on the "
        "queue is removed and get_email rerun, as an admin would.",
        f"Total wall time of this run: {time.monotonic() - started:,.0f} s; 1-minute load average "
        f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (other work on the machine "
        f"skews every figure; compare ratios from the same run only); peer logs under {work}.",
    ]
    if chart_error:
        notes.append(f"No chart: {chart_error}")
    notes += [f"MISSING {text}" for text in missing]
    (RESULTS / "summary.md").write_text(
        summary_markdown(facts, measurements, lines, notes, None if chart_error else "chart.png")
    )
    summary |= {"measurements": [m.__dict__ for m in measurements], "result_lines": lines, "notes": notes}
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2))
    for text in missing:
        say(f"MISSING {text}")
    say(f"wrote {RESULTS / 'summary.md'}" + ("" if chart_error else f" and {chart_png}"))
    for line in lines:
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
