"""Parsing in the worker processes gives what parsing in the thread gives, and a pool that is
gone makes the import parse in-thread instead of failing."""

from __future__ import annotations

from services.mail_scanner import parsepool
from services.mail_scanner.facts import parse_for_import
from tests.mail_scanner.engine.helpers import dsn, mail


def test_worker_processes_parse_like_the_thread_and_a_lost_pool_falls_back():
    raws = [mail(subject=f"Re: [TT1042] question {n}", cc="friend@example.org") for n in range(30)] + [
        dsn("<orig@helpdesk.example.test>", "gone@example.org"),
        b"\x00 not a mail at all",
    ]
    try:
        parsepool.warm_up()
        got = parsepool.Parsing(raws, "TT").result()
        assert got == [parse_for_import(raw, "TT") for raw in raws]
        assert got[0] is not None and got[0].ticket_number == "TT1042" and got[0].raw_sha256
        assert got[30] is not None and got[30].kind == "bounce"
        pending = parsepool.Parsing(raws, "TT")
        parsepool.shutdown()  # e.g. the scanner stopping while a batch is in flight
        assert pending.result() in ([None] * len(raws), got)
        assert parsepool.Parsing(raws[:2], "TT").result() == got[:2]  # a new pool starts
    finally:
        parsepool.shutdown()
