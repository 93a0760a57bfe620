"""The import transaction on SQLite and PostgreSQL: fencing, checkpoints, dedupe on UIDVALIDITY
change, error mails, rules, follow-ups, reopening and the auto-acknowledgement rate limit."""

from __future__ import annotations

import json

import pytest
from sqlmodel import col, select

from services.mail_scanner import accounts, tickets
from services.mail_scanner.intake import Engine, FetchedMail, LeaseLost, import_batch
from services.mail_scanner.models import ErrorMail, PendingAction, ScannerRule, Ticket, TicketComment
from services.mail_scanner.references import make_message_id
from shared.db import migrate, session_scope
from shared.outbox import OutboxEvent
from shared.secretbox import SecretBox
from shared.settings import Settings
from tests.mail_scanner.engine.helpers import MASTER_KEY, mail

TOKEN = "instance-a"
DOMAIN = "helpdesk.example.test"


def setup(db_url: str, **settings: object) -> tuple[Engine, int]:
    migrate("mail_scanner", db_url)
    box = SecretBox.from_string(MASTER_KEY)
    with session_scope(db_url) as session:
        data = accounts.AccountIn(name="support", host="127.0.0.1", username="alice", password="pw")
        row = accounts.create(session, box, data)
        row.active = True
        session.flush()
        account_id = row.id
        assert accounts.claim_accounts(session, TOKEN, 10, 60) == [account_id]
        secret = tickets.signing_secret(session, box)
    values = {"mail_domain": DOMAIN, "default_sender": f"support@{DOMAIN}", **settings}
    return Engine(settings=Settings(**values), secret=secret), account_id  # type: ignore[arg-type]


def run(
    db_url: str,
    engine: Engine,
    account_id: int,
    mails: list[FetchedMail],
    uidvalidity: int = 7,
    token: str = TOKEN,
):
    with session_scope(db_url) as session:
        return import_batch(session, engine, account_id, token, "INBOX", uidvalidity, mails)


def fetched(*raws: bytes, start: int = 1) -> list[FetchedMail]:
    return [FetchedMail(uid=start + i, size=len(raw), raw=raw) for i, raw in enumerate(raws)]


def all_of(db_url: str, model):  # type: ignore[no-untyped-def]
    with session_scope(db_url) as session:
        return list(session.exec(select(model).order_by(col(model.id))).all())


def outbox(db_url: str, topic: str) -> list[dict]:
    return [json.loads(e.payload) for e in all_of(db_url, OutboxEvent) if e.topic == topic]


def test_a_stale_instance_is_fenced_off(db_url):
    engine, account_id = setup(db_url)
    with pytest.raises(LeaseLost):
        run(db_url, engine, account_id, fetched(mail()), token="instance-b")
    assert all_of(db_url, Ticket) == [] and all_of(db_url, OutboxEvent) == []


def test_checkpoint_and_uidvalidity_resync_import_each_mail_once(db_url):
    engine, account_id = setup(db_url)
    batch = fetched(mail(subject="one"), mail(subject="two"), mail(subject="three"))
    first = run(db_url, engine, account_id, batch)
    assert list(first.outcomes.values()) == ["ticket_created"] * 3 and first.events == 3
    again = run(db_url, engine, account_id, batch)  # same UIDs: below the checkpoint
    assert again.outcomes == {}
    resync = run(db_url, engine, account_id, fetched(*(m.raw for m in batch), start=1), uidvalidity=8)
    assert list(resync.outcomes.values()) == ["duplicate"] * 3
    assert len(all_of(db_url, Ticket)) == 3
    assert len(outbox(db_url, "helpdesk.ticket-events")) == 3
    seen = [a for a in all_of(db_url, PendingAction) if a.action == "seen"]
    assert len(seen) == 6  # every scanned mail gets \Seen, duplicates too


def test_oversized_and_unparseable_mail_goes_to_the_error_folder(db_url):
    engine, account_id = setup(db_url, scanner_max_message_bytes=5_000)
    big = mail(body="x" * 10_000)
    result = run(
        db_url,
        engine,
        account_id,
        [FetchedMail(uid=1, size=len(big), raw=None), FetchedMail(uid=2, size=9, raw=b"\x00\xff\x00garbage")],
    )
    assert result.outcomes == {1: "error", 2: "error"}
    errors = all_of(db_url, ErrorMail)
    assert "too large" in errors[0].reason and "unparseable" in errors[1].reason
    moves = [(a.uid, a.target) for a in all_of(db_url, PendingAction) if a.action == "move"]
    assert moves == [(1, "mailsvc-errors"), (2, "mailsvc-errors")]
    assert all_of(db_url, Ticket) == []


def test_rules_ignore_delete_and_set_fields(db_url):
    engine, account_id = setup(db_url)
    with session_scope(db_url) as session:
        session.add(ScannerRule(account_id=account_id, position=0, name="spam", conditions=[{"field": "subject", "operator": "regex", "value": r"^\[spam\]"}], actions=[{"type": "delete"}]))  # fmt: skip
        session.add(ScannerRule(account_id=account_id, position=1, name="newsletter", conditions=[{"field": "header", "header": "List-Id", "operator": "contains", "value": "news"}], actions=[{"type": "ignore"}]))  # fmt: skip
        session.add(ScannerRule(account_id=account_id, position=2, name="vip", match="any", conditions=[{"field": "from", "operator": "ends_with", "value": "@vip.example"}, {"field": "body", "operator": "contains", "value": "URGENT", "case_insensitive": False}], actions=[{"type": "set_fields", "priority": "high", "assigned_group": "2nd level"}, {"type": "move", "folder": "VIP"}]))  # fmt: skip
    result = run(
        db_url,
        engine,
        account_id,
        fetched(
            mail(subject="[SPAM] buy now"),
            mail(subject="Weekly", headers={"List-Id": "<news.example.org>"}),
            mail(sender="ceo@vip.example", subject="Help"),
            mail(subject="plain", body="urgent please"),
        ),
    )
    assert result.outcomes == {1: "delete", 2: "ignore", 3: "ticket_created", 4: "ticket_created"}
    vip, plain = all_of(db_url, Ticket)
    assert (vip.priority, vip.assigned_group) == ("high", "2nd level") and plain.priority is None
    actions = {(a.uid, a.action, a.target) for a in all_of(db_url, PendingAction)}
    assert {(1, "delete", None), (2, "seen", None), (3, "move", "VIP")} <= actions


def test_follow_ups_reopen_closed_tickets_and_only_trust_known_senders(db_url):
    engine, account_id = setup(db_url)
    run(db_url, engine, account_id, fetched(mail(cc="friend@example.org")))
    [ticket] = all_of(db_url, Ticket)
    with session_scope(db_url) as session:
        tickets.set_status(session, session.get(Ticket, ticket.id), "closed")
    ours = make_message_id(ticket.id, 1, engine.secret, DOMAIN)
    forged = make_message_id(ticket.id, 1, b"wrong secret", DOMAIN)
    result = run(
        db_url,
        engine,
        account_id,
        fetched(
            mail(sender="someone@else.example", subject="Re: hi", in_reply_to=ours),
            mail(sender="friend@example.org", subject=f"Re[2]: Antw: [{ticket.number}] x"),
            mail(sender="other@else.example", subject=f"Fwd: {ticket.number}"),
            mail(sender="other2@else.example", subject="Re: hi", in_reply_to=forged),
            start=10,
        ),
    )
    assert result.outcomes == {
        10: "comment_added",
        11: "comment_added",
        12: "ticket_created",
        13: "ticket_created",
    }
    reopened = all_of(db_url, Ticket)[0]
    assert reopened.status == "open"
    kinds = [e["kind"] for e in outbox(db_url, "helpdesk.ticket-events")]
    assert kinds.count("ticket.status_changed") == 2  # closed by the agent, reopened by the reply
    assert ticket.number in (all_of(db_url, Ticket)[1].note or "")
    assert len([c for c in all_of(db_url, TicketComment) if c.ticket_id == ticket.id]) == 3


def test_reopening_can_be_switched_off(db_url):
    engine, account_id = setup(db_url, scanner_reopen_closed=False)
    run(db_url, engine, account_id, fetched(mail()))
    [ticket] = all_of(db_url, Ticket)
    with session_scope(db_url) as session:
        tickets.set_status(session, session.get(Ticket, ticket.id), "closed")
    run(db_url, engine, account_id, fetched(mail(subject=f"Re: {ticket.number}"), start=2))
    assert all_of(db_url, Ticket)[0].status == "closed"


def test_auto_acknowledgement_is_rate_limited_and_never_answers_machines(db_url):
    engine, account_id = setup(db_url, scanner_auto_ack=True, scanner_auto_ack_interval_s=3600)
    run(
        db_url,
        engine,
        account_id,
        fetched(
            mail(subject="first"),
            mail(subject="second"),
            mail(
                sender="bot@example.org",
                subject="Automatic reply",
                headers={"Auto-Submitted": "auto-replied"},
            ),
            mail(sender=f"support@{DOMAIN}", subject="our own"),
        ),
    )
    acks = outbox(db_url, "mail.outbound.transactional")
    assert len(acks) == 1 and acks[0]["to"] == ["customer@example.org"]
    assert acks[0]["headers"]["Auto-Submitted"] == "auto-replied" and acks[0]["message_id_header"]
    assert len(all_of(db_url, Ticket)) == 2


def test_a_mail_that_breaks_the_import_goes_to_the_error_folder_and_the_rest_is_imported(db_url, monkeypatch):
    engine, account_id = setup(db_url)
    real_import = tickets.import_mail

    def fragile(session, engine, account, facts, raw, decision):  # type: ignore[no-untyped-def]
        if facts.subject == "poison":
            raise RuntimeError("a bug this mail triggers")
        return real_import(session, engine, account, facts, raw, decision)

    monkeypatch.setattr(tickets, "import_mail", fragile)
    batch = fetched(mail(subject="good 1"), mail(subject="poison"), mail(subject="good 2"))
    with pytest.raises(RuntimeError):
        run(db_url, engine, account_id, batch)  # the fast path fails as a whole and rolls back
    assert all_of(db_url, Ticket) == []
    with session_scope(db_url) as session:
        result = import_batch(session, engine, account_id, TOKEN, "INBOX", 7, batch, careful=True)
    assert result.outcomes == {1: "ticket_created", 2: "error", 3: "ticket_created"}
    assert [t.subject for t in all_of(db_url, Ticket)] == ["good 1", "good 2"]
    [error] = all_of(db_url, ErrorMail)
    assert error.uid == 2 and "RuntimeError" in error.reason and error.raw_sha256


def test_one_batch_writes_tickets_comments_and_events_in_mail_order(db_url):
    """The batch writes its rows together at the end; a follow-up by ticket number to a ticket
    opened earlier in the same batch still finds it, and the events keep the mails' order."""
    engine, account_id = setup(db_url)
    first_number = f"TT{engine.settings.scanner_ticket_start + 1}"
    batch = fetched(
        mail(sender="ann@example.org", subject="Printer on fire", body="original\n"),
        mail(sender="bob@example.org", subject="Second problem"),
        mail(
            sender="ann@example.org", subject=f"Re: [{first_number}] Printer on fire", body="still burning\n"
        ),
        mail(sender="ann@example.org", subject="Printer on fire", body="original\n", message_id="<dup@x>"),
        mail(sender="ann@example.org", subject="Printer on fire", body="original\n", message_id="<dup@x>"),
    )
    batch[4].raw = batch[3].raw  # the same mail twice in one batch: imported once
    batch[4].size = batch[3].size
    result = run(db_url, engine, account_id, batch)
    assert result.outcomes == {
        1: "ticket_created",
        2: "ticket_created",
        3: "comment_added",
        4: "ticket_created",
        5: "duplicate",
    }
    numbers = [t.number for t in all_of(db_url, Ticket)]
    assert numbers == [first_number, "TT1002", "TT1003"]
    comments = all_of(db_url, TicketComment)
    first = all_of(db_url, Ticket)[0]
    assert [c.ticket_id for c in comments if "still burning" in c.text] == [first.id]
    events = outbox(db_url, "helpdesk.ticket-events")
    assert [(e["kind"], e["ticket_number"]) for e in events] == [
        ("ticket.created", first_number),
        ("ticket.created", "TT1002"),
        ("ticket.comment_added", first_number),
        ("ticket.created", "TT1003"),
    ]
    assert [e["comment_id"] for e in events] == [c.id for c in comments]
    seen = [a.uid for a in all_of(db_url, PendingAction) if a.action == "seen"]
    assert sorted(seen) == [1, 2, 3, 4, 5]
    again = run(db_url, engine, account_id, fetched(*(m.raw for m in batch), start=1), uidvalidity=8)
    assert set(again.outcomes.values()) == {"duplicate"}  # new UIDVALIDITY: deduplicated
    assert len(all_of(db_url, Ticket)) == 3
