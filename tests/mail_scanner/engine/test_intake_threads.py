"""Threading on the customer's own Message-IDs through the import transaction (SQLite and
PostgreSQL): replies to stored incoming mail join its ticket only from someone on that ticket,
in later batches, in the same batch and on the careful path; duplicates, closed tickets, the
precedence of signed ids and ticket numbers, the rules' dry run, and mail stored before the
migration."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text
from sqlmodel import select

from services.mail_scanner import intake, tickets
from services.mail_scanner.intake import import_batch
from services.mail_scanner.models import ScannerAccount, Ticket, TicketComment
from services.mail_scanner.references import make_message_id
from shared.db import migrate, session_scope
from tests.mail_scanner.engine.helpers import mail
from tests.mail_scanner.engine.test_intake import TOKEN, all_of, fetched, outbox, run
from tests.mail_scanner.engine.test_intake import setup as set_up

ANN = "ann@example.org"


def comments_of(db_url: str, ticket_id: int | None) -> list[str]:
    return [c.text.strip() for c in all_of(db_url, TicketComment) if c.ticket_id == ticket_id]


def test_replies_to_own_mail_thread_and_a_copied_message_id_does_not(db_url):
    engine, account_id = set_up(db_url)
    run(
        db_url,
        engine,
        account_id,
        fetched(mail(ANN, "Printer", "first\n", cc="boss@example.org", message_id="<o1@example.org>")),
    )
    [ticket] = all_of(db_url, Ticket)
    result = run(
        db_url,
        engine,
        account_id,
        fetched(
            mail(
                ANN, "Re: Printer", "reply\n", in_reply_to="<o1@example.org>", message_id="<o2@example.org>"
            ),
            # a CC of the ticket, by References only, nearest id unknown to us
            mail(
                "boss@example.org",
                "Re: Printer",
                "boss\n",
                headers={"References": "<o1@example.org> <ack@elsewhere>"},
            ),
            # a reply to the customer's own follow-up (the id of a later incoming mail)
            mail(ANN, "Re: Printer", "again\n", in_reply_to="<o2@example.org>"),
            # a stranger who copied the Message-ID: a new ticket, noting the reference
            mail(
                "mallory@evil.example",
                "Re: Printer",
                "inject\n",
                in_reply_to="<o1@example.org>",
                message_id="<i@evil.example>",
            ),
            # forwarded by the customer to a colleague not on the ticket: new ticket too
            mail(
                "colleague@example.org", "Fwd: Printer", "fwd\n", headers={"References": "<o1@example.org>"}
            ),
            start=2,
        ),
    )
    assert result.outcomes == {
        2: "comment_added",
        3: "comment_added",
        4: "comment_added",
        5: "ticket_created",
        6: "ticket_created",
    }
    assert comments_of(db_url, ticket.id) == ["first", "reply", "boss", "again"]
    _, foreign, forwarded = all_of(db_url, Ticket)
    assert foreign.requester_email == "mallory@evil.example" and ticket.number in (foreign.note or "")
    assert comments_of(db_url, foreign.id) == ["inject"]
    assert forwarded.requester_email == "colleague@example.org"
    # the comments hold the ids, so a reply to the stranger's own mail threads into *their* ticket
    run(
        db_url,
        engine,
        account_id,
        fetched(mail("mallory@evil.example", "Re: x", "more\n", in_reply_to=_mid(db_url, "inject")), start=7),
    )
    assert comments_of(db_url, foreign.id) == ["inject", "more"]


def _mid(db_url: str, body: str) -> str:
    [row] = [c for c in all_of(db_url, TicketComment) if c.text.strip() == body]
    assert row.message_id
    return row.message_id


def test_replies_in_the_same_batch_as_their_original_thread(db_url):
    engine, account_id = set_up(db_url)
    result = run(
        db_url,
        engine,
        account_id,
        fetched(
            mail(ANN, "Login", "original\n", cc="boss@example.org", message_id="<b1@example.org>"),
            mail("bob@example.org", "Other", "other\n", message_id="<b2@example.org>"),
            mail(
                ANN,
                "Re: Login",
                "same batch\n",
                in_reply_to="<b1@example.org>",
                message_id="<b3@example.org>",
            ),
            # a ticket number lookup in between writes the batch's new tickets early
            mail(
                "bob@example.org", f"Re: [TT{engine.settings.scanner_ticket_start + 2}] Other", "by number\n"
            ),
            mail(
                "boss@example.org",
                "Re: Login",
                "boss\n",
                headers={"References": "<b1@example.org> <b3@example.org>"},
            ),
            mail("mallory@evil.example", "Re: Login", "inject\n", in_reply_to="<b3@example.org>"),
            mail(ANN, "Re: Login", "last\n", in_reply_to="<b3@example.org>"),
        ),
    )
    assert list(result.outcomes.values()) == [
        "ticket_created",
        "ticket_created",
        "comment_added",
        "comment_added",
        "comment_added",
        "ticket_created",
        "comment_added",
    ]
    login, other, foreign = all_of(db_url, Ticket)
    assert comments_of(db_url, login.id) == ["original", "same batch", "boss", "last"]
    assert comments_of(db_url, other.id) == ["other", "by number"]
    assert login.number in (foreign.note or "") and comments_of(db_url, foreign.id) == ["inject"]
    assert login.last_message_id and login.cc == ["boss@example.org"]
    events = outbox(db_url, "helpdesk.ticket-events")
    assert [(e["kind"], e["ticket_number"]) for e in events] == [
        ("ticket.created", login.number),
        ("ticket.created", other.number),
        ("ticket.comment_added", login.number),
        ("ticket.comment_added", other.number),
        ("ticket.comment_added", login.number),
        ("ticket.created", foreign.number),
        ("ticket.comment_added", login.number),
    ]


def test_the_careful_path_threads_too(db_url):
    engine, account_id = set_up(db_url)
    batch = fetched(
        mail(ANN, "Careful", "original\n", message_id="<c1@example.org>"),
        mail(ANN, "Re: Careful", "reply\n", in_reply_to="<c1@example.org>"),
        mail("mallory@evil.example", "Re: Careful", "inject\n", in_reply_to="<c1@example.org>"),
    )
    with session_scope(db_url) as session:
        result = import_batch(session, engine, account_id, TOKEN, "INBOX", 7, batch, careful=True)
    assert result.outcomes == {1: "ticket_created", 2: "comment_added", 3: "ticket_created"}
    first = all_of(db_url, Ticket)[0]
    assert comments_of(db_url, first.id) == ["original", "reply"]


def test_duplicate_message_ids_pick_the_most_recent_ticket_of_an_allowed_sender(db_url):
    engine, account_id = set_up(db_url)
    # a sender that gives every mail the same id (sizes differ: same id, Date and size would be
    # the same mail, imported once)
    reused = "<1@localhost>"
    run(db_url, engine, account_id, fetched(mail(ANN, "One", "one\n", message_id=reused)))
    run(db_url, engine, account_id, fetched(mail(ANN, "Two", "the second one\n", message_id=reused), start=2))
    run(
        db_url,
        engine,
        account_id,
        fetched(mail("bob@example.org", "Bob's", "bob: the third\n", message_id=reused), start=3),
    )
    one, two, bobs = all_of(db_url, Ticket)
    result = run(
        db_url,
        engine,
        account_id,
        fetched(
            mail(ANN, "Re: Two", "ann's reply\n", in_reply_to=reused),
            mail("bob@example.org", "Re: Bob's", "bob's reply\n", in_reply_to=reused),
            start=4,
        ),
    )
    assert result.outcomes == {4: "comment_added", 5: "comment_added"}
    assert comments_of(db_url, two.id) == ["the second one", "ann's reply"]
    assert comments_of(db_url, bobs.id) == ["bob: the third", "bob's reply"]
    assert comments_of(db_url, one.id) == ["one"]


def test_the_same_mail_in_two_accounts_threads_into_the_newest_ticket(db_url):
    engine, first_account = set_up(db_url)
    with session_scope(db_url) as session:
        second = ScannerAccount(
            name="sales", host="127.0.0.1", username="bob", active=True, lease_owner=TOKEN
        )
        second.lease_until = datetime(2100, 1, 1, tzinfo=UTC)
        session.add(second)
        session.flush()
        second_account = second.id
    original = mail(ANN, "Both inboxes", "original\n", message_id="<both@example.org>")
    run(db_url, engine, first_account, fetched(original))
    run(db_url, engine, second_account, fetched(original))
    older, newer = all_of(db_url, Ticket)
    run(
        db_url,
        engine,
        first_account,
        fetched(mail(ANN, "Re: Both", "reply\n", in_reply_to="<both@example.org>"), start=2),
    )
    assert comments_of(db_url, newer.id) == ["original", "reply"]
    assert comments_of(db_url, older.id) == ["original"]


def test_a_closed_ticket_is_reopened_by_a_reply_to_own_mail(db_url):
    engine, account_id = set_up(db_url)
    run(db_url, engine, account_id, fetched(mail(ANN, "Closed", "original\n", message_id="<x1@example.org>")))
    [ticket] = all_of(db_url, Ticket)
    with session_scope(db_url) as session:
        tickets.set_status(session, session.get(Ticket, ticket.id), "closed")
    run(
        db_url,
        engine,
        account_id,
        fetched(mail(ANN, "Re: Closed", "reopen\n", in_reply_to="<x1@example.org>"), start=2),
    )
    assert all_of(db_url, Ticket)[0].status == "open"
    kinds = [e["kind"] for e in outbox(db_url, "helpdesk.ticket-events")]
    assert kinds.count("ticket.status_changed") == 2  # closed by the agent, reopened by the reply


def test_signed_ids_and_ticket_numbers_take_precedence_over_stored_ids(db_url):
    engine, account_id = set_up(db_url)
    run(
        db_url,
        engine,
        account_id,
        fetched(
            mail(ANN, "A", "a\n", message_id="<a@example.org>"),
            mail(ANN, "B", "b\n", message_id="<b@example.org>"),
        ),
    )
    a, b = all_of(db_url, Ticket)
    signed_b = make_message_id(b.id, 1, engine.secret, engine.settings.mail_domain)
    result = run(
        db_url,
        engine,
        account_id,
        fetched(
            mail(ANN, f"Re: [{b.number}] A", "number wins\n", in_reply_to="<a@example.org>"),
            mail(
                ANN,
                "Re: A",
                "signed wins\n",
                headers={"In-Reply-To": "<a@example.org>", "References": signed_b},
            ),
            # a number the sender may not use: their own stored mail still threads
            mail("bob@example.org", "Bob", "bob\n", message_id="<bob@example.org>"),
            mail("bob@example.org", f"Re: [{a.number}] Bob", "bob again\n", in_reply_to="<bob@example.org>"),
            start=3,
        ),
    )
    assert result.outcomes == {
        3: "comment_added",
        4: "comment_added",
        5: "ticket_created",
        6: "comment_added",
    }
    assert comments_of(db_url, a.id) == ["a"]
    assert comments_of(db_url, b.id) == ["b", "number wins", "signed wins"]
    bobs = all_of(db_url, Ticket)[2]
    assert comments_of(db_url, bobs.id) == ["bob", "bob again"]


def test_an_author_who_joined_by_our_signed_id_is_on_the_ticket(db_url):
    engine, account_id = set_up(db_url)
    run(db_url, engine, account_id, fetched(mail(ANN, "Team", "original\n", message_id="<t1@example.org>")))
    [ticket] = all_of(db_url, Ticket)
    signed = make_message_id(ticket.id, 1, engine.secret, engine.settings.mail_domain)
    run(
        db_url,
        engine,
        account_id,
        fetched(mail("helper@example.org", "Re: Team", "joined\n", in_reply_to=signed), start=2),
    )
    run(
        db_url,
        engine,
        account_id,
        fetched(mail("helper@example.org", "Re: Team", "again\n", in_reply_to="<t1@example.org>"), start=3),
    )
    assert len(all_of(db_url, Ticket)) == 1
    assert comments_of(db_url, ticket.id) == ["original", "joined", "again"]


def test_the_dry_run_reports_the_thread(db_url):
    engine, account_id = set_up(db_url)
    run(db_url, engine, account_id, fetched(mail(ANN, "Dry", "original\n", message_id="<d1@example.org>")))
    [ticket] = all_of(db_url, Ticket)
    with session_scope(db_url) as session:
        account = session.get(ScannerAccount, account_id)
        own = intake.dry_run(
            session, engine, account, mail(ANN, "Re: Dry", "x\n", in_reply_to="<d1@example.org>")
        )
        foreign = intake.dry_run(
            session,
            engine,
            account,
            mail("mallory@evil.example", "Re: Dry", "x\n", in_reply_to="<d1@example.org>"),
        )
    assert own["outcome"] == "comment_added" and own["ticket_number"] == ticket.number
    assert foreign["outcome"] == "ticket_created" and ticket.number in str(foreign["note"])


def test_mail_stored_before_the_migration_threads(db_url):
    migrate("mail_scanner", db_url, revision="ms_0002")
    moment = datetime.now(UTC)
    with session_scope(db_url) as session:
        session.execute(
            text(
                "INSERT INTO ms_ticket (number, subject, status, requester_email, requester_name, cc, "
                "created_at, updated_at) VALUES ('OLD1', 'Old', 'open', :ann, '', '[]', :now, :now)"
            ),
            {"ann": ANN, "now": moment},
        )
        ticket_id = session.execute(text("SELECT id FROM ms_ticket")).scalar_one()
        session.execute(
            text(
                "INSERT INTO ms_comment (ticket_id, direction, author_email, author_name, message_id, "
                "subject, text, reply_text, attachments, cc, created_at) VALUES "
                "(:t, 'in', :ann, '', '<old@example.org>', 'Old', 'old', 'old', '[]', '[]', :now)"
            ),
            {"t": ticket_id, "ann": ANN, "now": moment},
        )
    engine, account_id = set_up(db_url)  # upgrades to the newest revision
    with session_scope(db_url) as session:
        [key] = session.exec(select(TicketComment.message_key)).all()
    assert key is not None
    result = run(
        db_url, engine, account_id, fetched(mail(ANN, "Re: Old", "new\n", in_reply_to="<old@example.org>"))
    )
    assert list(result.outcomes.values()) == ["comment_added"]
    assert comments_of(db_url, ticket_id) == ["old", "new"]
