"""Follow-up correctness is judged by tokens, not by trusting ticket numbers."""

from __future__ import annotations

from bench.peers.django_helpdesk import check_followups, tag
from bench.peers.workload import FOLLOWUP_KINDS, inbox_workload


def test_all_right_when_every_followup_lands_on_its_originals_ticket() -> None:
    wl = inbox_workload(60, None, tag)
    tickets = {token: wl.ticket_rank(pos) for pos, token in wl.originals.items()}
    tickets |= {f.token: wl.ticket_rank(f.original) for f in wl.followups}
    counts = check_followups(wl, tickets)
    for kind in FOLLOWUP_KINDS:
        assert counts[f"{kind}_ok"] == counts[kind] > 0


def test_new_tickets_and_lost_mails_count_as_wrong() -> None:
    wl = inbox_workload(60, None, tag)
    tickets = {token: wl.ticket_rank(pos) for pos, token in wl.originals.items()}
    first, _lost, *rest = wl.followups
    tickets[first.token] = 999  # became a ticket of its own
    # _lost: never imported
    tickets |= {f.token: wl.ticket_rank(f.original) for f in rest}
    counts = check_followups(wl, tickets)
    assert sum(counts[f"{k}_ok"] for k in FOLLOWUP_KINDS) == len(wl.followups) - 2
    assert tag(12) == "[bench-12]"
