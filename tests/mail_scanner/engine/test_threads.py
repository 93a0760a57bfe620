"""The pure decisions of threading on stored Message-IDs (services/mail_scanner/threads.py):
keys, reference order, who is on a ticket, the choice among candidates and the precedence."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from services.mail_scanner import threads


@dataclass(eq=False)
class T:
    name: str
    requester: str = "ann@example.org"
    cc: list[str] = field(default_factory=list)
    articles: list[tuple[str, list[str]]] = field(default_factory=list)


def on(sender: str):  # type: ignore[no-untyped-def]
    return lambda t: threads.may_write(sender, t.requester, t.cc, t.articles)


def test_message_key_ignores_brackets_and_whitespace_but_not_case():
    key = threads.message_key("<abc.1@example.org>")
    assert key is not None and len(key) == 64
    assert threads.message_key("  abc.1@example.org ") == key
    assert threads.message_key("<ABC.1@example.org>") != key  # the local part is case-sensitive
    assert threads.message_key(None) is None and threads.message_key("") is None
    assert threads.message_key(" <> ") is None


@given(st.text(max_size=1_200))
def test_message_key_takes_any_text(value):
    key = threads.message_key(value)
    assert key is None or len(key) == 64


def test_reference_order_is_nearest_first_without_repeats_and_bounded():
    keys = threads.reference_order(["<c@x>"], ["<a@x>", "<b@x>", "<c@x>"])
    assert keys == [threads.message_key(i) for i in ("<c@x>", "<b@x>", "<a@x>")]
    many = [f"<{n}@x>" for n in range(500)]
    assert len(threads.reference_order([], many)) == threads.MAX_REFERENCES
    assert threads.reference_order([], many)[0] == threads.message_key("<499@x>")
    assert threads.reference_order([], []) == []


def test_who_may_write_requester_cc_and_article_participants_only():
    articles = [("ann@example.org", ["boss@example.org"]), ("helper@example.org", None)]
    assert threads.may_write("Ann@Example.org", "ann@example.org", [])
    assert threads.may_write("cc@example.org", "ann@example.org", ["cc@example.org"])
    assert threads.may_write("boss@example.org", "ann@example.org", [], articles)  # a Cc of an article
    assert threads.may_write("helper@example.org", "ann@example.org", [], articles)  # an article's author
    assert not threads.may_write("stranger@evil.example", "ann@example.org", ["cc@example.org"], articles)
    assert not threads.may_write("", "", [""], [("", [""])])  # no sender is nobody


def test_pick_prefers_the_nearest_reference_then_the_most_recent_allowed_ticket():
    old, newer, strangers = T("old"), T("newer"), T("strangers", requester="eve@evil.example")
    candidates = {"k1": [strangers, newer, old], "k2": [old]}
    assert threads.pick(["k1", "k2"], candidates, on("ann@example.org")) == (newer, None)
    assert threads.pick(["k2", "k1"], candidates, on("ann@example.org")) == (old, None)
    assert threads.pick(["k0", "k2"], candidates, on("ann@example.org")) == (old, None)  # unknown id skipped
    # a duplicate Message-ID held by someone else's ticket too: only the sender's own counts
    assert threads.pick(["k1"], candidates, on("eve@evil.example")) == (strangers, None)
    assert threads.pick(["k1"], candidates, on("mallory@evil.example")) == (None, strangers)
    assert threads.pick([], candidates, on("ann@example.org")) == (None, None)


def test_most_recent_first_ranks_unwritten_batch_tickets_then_ids_and_lists_each_once():
    @dataclass(eq=False)
    class Held:
        id: int | None

    unwritten_a, unwritten_b, written = Held(None), Held(None), Held(7)
    held = [written, unwritten_a, unwritten_b, unwritten_a, written]
    ranked = threads.most_recent_first(held, lambda t: t.id, [3, 7, 12], 10)
    assert ranked == [unwritten_b, unwritten_a, 12, written, 3]  # the held ticket stands for id 7
    assert threads.most_recent_first(held, lambda t: t.id, [3, 7, 12], 2) == [unwritten_b, unwritten_a]
    assert threads.most_recent_first([], lambda t: t.id, range(10_000), 3) == [9_999, 9_998, 9_997]
    assert threads.most_recent_first([], lambda t: t.id, [1], 0) == []


def test_pick_asks_about_each_ticket_once():
    shared = T("shared", requester="bob@example.org")
    asked: list[str] = []

    def allowed(t: T) -> bool:
        asked.append(t.name)
        return False

    assert threads.pick(["k1", "k2"], {"k1": [shared], "k2": [shared]}, allowed) == (None, shared)
    assert asked == ["shared"]


def test_precedence_signed_then_number_then_stored_ids():
    signed, numbered, stored = T("signed"), T("numbered"), T("stored")
    calls: list[str] = []

    def ask(name: str, value):  # type: ignore[no-untyped-def]
        def fn():  # type: ignore[no-untyped-def]
            calls.append(name)
            return value

        return fn

    found = threads.follow_up(ask("s", signed), ask("n", (numbered, True)), ask("m", (stored, None)))
    assert (found.ticket, found.via, calls) == (signed, "signed", ["s"])  # later ones never asked
    calls.clear()
    found = threads.follow_up(ask("s", None), ask("n", (numbered, True)), ask("m", (stored, None)))
    assert (found.ticket, found.via, calls) == (numbered, "number", ["s", "n"])
    calls.clear()
    found = threads.follow_up(ask("s", None), ask("n", (None, False)), ask("m", (stored, None)))
    assert (found.ticket, found.via, calls) == (stored, "message_id", ["s", "n", "m"])
    # a number the sender may not use does not stop a stored id the sender may use
    found = threads.follow_up(ask("s", None), ask("n", (numbered, False)), ask("m", (stored, None)))
    assert (found.ticket, found.via, found.refused_number) == (stored, "message_id", None)
    # nothing usable: a new ticket, with what was refused for its note
    found = threads.follow_up(ask("s", None), ask("n", (numbered, False)), ask("m", (None, stored)))
    assert (found.ticket, found.via) == (None, "new")
    assert (found.refused_number, found.refused_reference) == (numbered, stored)
    found = threads.follow_up(ask("s", None), ask("n", (None, False)), ask("m", (None, None)))
    assert found == threads.FollowUp()
