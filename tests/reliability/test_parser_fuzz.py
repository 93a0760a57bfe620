"""No exception escapes ``mailsvc parse``: fuzzed through the CLI entry itself, in-process.

Mutated bytes of real mails (seeded from the tests' own fixtures, plus corpus files when
../shared/corpus is present) go through ``shared.cli.app`` with typer's CliRunner, on stdin and as
a file. Every run must end with exit 0 and a JSON object, or exit 2 and ``{"error": ...}``.
Default run: a few hundred examples and a deterministic sample of the corpus; ``-m soak``: ten
minutes of mutations and the whole corpus. (tests/mail_scanner/parsing/test_corpus.py runs the
library function over the whole corpus in the default run.)
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from shared.cli import app
from tests.mail_scanner.engine.helpers import dsn, mail
from tests.mail_scanner.parsing.test_fuzz_cli import SEED, TOKENS
from tests.unit.test_parsing import MULTIPART

pytestmark = pytest.mark.timeout(900)

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
CORPUS_SAMPLE_EVERY = 6  # default run: every 6th file (the soak run takes them all)
SOAK_SECONDS = 600
FIELDS = {"from", "from_email", "to", "cc", "subject", "text", "html", "attachments", "kind", "ticket_number"}


def seeds() -> list[bytes]:
    """Real mails from the suite's own fixtures: multiparts, a forwarded mail, a DSN, replies."""
    return [
        SEED,
        MULTIPART,
        mail(subject="Re: [TT1042] Drucker", cc="Boss <boss@example.org>", in_reply_to="<a@b>"),
        mail(sender="=?utf-8?b?SsO8cmdlbg==?= <j@example.com>", body="Grüße\n> quoted\n-- \nsig\n"),
        dsn("<orig@example.org>", "gone@example.org"),
    ]


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    suffixes = {".eml", ".box", ".txt", ".msg"}
    return sorted(
        p
        for p in CORPUS.rglob("*")
        if p.is_file() and p.suffix.lower() in suffixes and "mjml" not in p.parts[-2]
    )


RUNNER = CliRunner()


def run_parse(raw: bytes | None = None, path: Path | None = None) -> None:
    """``mailsvc parse`` on stdin (raw) or a file; fails on anything but the documented outcomes."""
    args = ["parse", "-" if path is None else str(path)]
    result = RUNNER.invoke(app, args, input=raw)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"exception escaped mailsvc parse: {result.exception!r}") from result.exception
    assert result.exit_code in (0, 2), (result.exit_code, result.output[:500])
    data = json.loads(result.stdout)
    if result.exit_code == 0:
        assert FIELDS <= set(data), sorted(data)
        assert all("content" not in a for a in data["attachments"])
    else:
        assert set(data) >= {"error"} and data["error"], data


def mutate(raw: bytes, edits: list[tuple[int, int, int, bytes]]) -> bytes:
    """Apply (kind, position, length, chunk) edits: overwrite, insert, delete, duplicate, truncate."""
    data = bytearray(raw)
    for kind, position, length, chunk in edits:
        at = position % (len(data) + 1)
        if kind == 0:
            data[at : at + len(chunk)] = chunk
        elif kind == 1:
            data[at:at] = chunk
        elif kind == 2:
            del data[at : at + length]
        elif kind == 3:
            data[at:at] = data[at : at + length]
        else:
            del data[at:]
    return bytes(data)


chunks = st.one_of(st.sampled_from(TOKENS), st.binary(max_size=12))
edits = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 10_000), st.integers(0, 400), chunks), min_size=1, max_size=12
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(seeds()), edits)
def test_mutated_real_mails_never_escape_the_cli(
    seed: bytes, changes: list[tuple[int, int, int, bytes]]
) -> None:
    run_parse(mutate(seed, changes))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3_000))
def test_random_bytes_never_escape_the_cli(raw: bytes) -> None:
    run_parse(raw)


def test_hopeless_and_huge_inputs_exit_cleanly(tmp_path: Path) -> None:
    for raw in (b"", b"\x00" * 10, b"\r\n" * 1000, b"From: x\r\n" * 50_000, b"Subject: " + b"\xff" * 100_000):
        run_parse(raw)
    big = tmp_path / "big.eml"
    big.write_bytes(SEED + b"A" * 27_000_000)  # over the 25 MiB default: headers only
    run_parse(path=big)
    missing = RUNNER.invoke(app, ["parse", str(tmp_path / "missing.eml")])
    assert missing.exit_code == 2 and not (
        missing.exception and not isinstance(missing.exception, SystemExit)
    )


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"mail corpus not present at {CORPUS}")
def test_corpus_sample_through_the_cli() -> None:
    files = corpus_files()[::CORPUS_SAMPLE_EVERY]
    started = time.monotonic()
    for path in files:
        run_parse(path=path)
    print(f"\nRESULT cli_corpus_files={len(files)} seconds={time.monotonic() - started:.1f}")
    assert len(files) > 100


@pytest.mark.soak
@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"mail corpus not present at {CORPUS}")
def test_soak_whole_corpus_through_the_cli() -> None:
    files = corpus_files()
    started = time.monotonic()
    for path in files:
        run_parse(path=path)
    print(f"\nRESULT cli_corpus_files={len(files)} seconds={time.monotonic() - started:.1f}")


@pytest.mark.soak
def test_soak_ten_minutes_of_mutations_through_the_cli() -> None:
    """Deterministic per run (seeded); corpus files join the seeds when present."""
    rng = random.Random(8)
    pool = seeds() + [p.read_bytes() for p in corpus_files()[::10]]
    started, runs = time.monotonic(), 0
    while time.monotonic() - started < SOAK_SECONDS:
        seed = rng.choice(pool)
        changes = [
            (
                rng.randrange(5),
                rng.randrange(len(seed) + 1),
                rng.randrange(400),
                rng.choice([*TOKENS, rng.randbytes(8)]),
            )
            for _ in range(rng.randint(1, 12))
        ]
        raw = mutate(seed, changes)
        try:
            run_parse(raw)
        except AssertionError as exc:
            raise AssertionError(f"run {runs}: {exc} (input starts {raw[:200]!r})") from exc
        runs += 1
    print(f"\nRESULT soak_cli_runs={runs} seconds={SOAK_SECONDS}")
