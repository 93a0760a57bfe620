"""The shared workloads: same personalised ~3 KB newsletter for every system, same inbox mix."""

from __future__ import annotations

import email
import email.policy
import re
import string
from email.message import EmailMessage
from pathlib import Path

import jinja2
import pytest

from bench.peers import workload as w

NAME, ADDRESS = "Elif Member4", "member000004@rcpt.example.test"


def _django_like(template: str, name: str, address: str) -> str:
    # Stands in for Django's renderer (not installed here): only these two variables occur.
    return template.replace("{{ subscription.name }}", name).replace("{{ subscription.email }}", address)


def _rendered(style: str, name: str, address: str) -> str:
    greeting, body, footer = w.bulk_template(style)
    text = greeting + body + footer
    if style == "plain":
        return greeting.format(name=name) + body + footer.format(email=address)
    if style == "mailman":
        return string.Template(text).substitute(user_name_or_email=name, user_email=address)
    if style == "django":
        return _django_like(text, name, address)
    assert style == "jinja"
    env = jinja2.Environment(keep_trailing_newline=True)  # jinja drops the last newline otherwise
    return env.from_string(text).render(contact={"name": name, "email": address})


@pytest.mark.parametrize("style", sorted(w.STYLES))
def test_every_system_renders_the_same_text(style: str) -> None:
    assert _rendered(style, NAME, ADDRESS) == w.render_bulk(NAME, ADDRESS)


def test_the_message_is_personalised_per_recipient() -> None:
    (name_a, addr_a), (name_b, addr_b) = list(w.recipients(2))
    a, b = w.render_bulk(name_a, addr_a), w.render_bulk(name_b, addr_b)
    assert a != b
    assert a.startswith(f"Hello {name_a},") and addr_a in a and addr_b not in a
    assert b.startswith(f"Hello {name_b},") and addr_b in b


def test_a_delivered_copy_is_about_3_kb() -> None:
    msg = EmailMessage()
    msg["From"] = w.BULK_SENDER
    msg["To"] = f"{NAME} <{ADDRESS}>"
    msg["Subject"] = w.BULK_SUBJECT
    msg["Date"] = "Fri, 27 Nov 2026 12:00:00 +0000"
    msg["Message-ID"] = "<1.bench@bench.example.test>"
    msg["List-Unsubscribe"] = "<https://bench.example.test/u/1>"
    msg.set_content(w.render_bulk(NAME, ADDRESS))
    assert 2_700 <= len(msg.as_bytes()) <= 3_300


def test_the_body_has_nothing_a_template_engine_would_escape_or_interpret() -> None:
    body = w.bulk_body()
    assert body.isascii()
    assert not set("&<>'\"$%{}") & set(body)


def test_recipients_are_deterministic_and_unique() -> None:
    first, again = list(w.recipients(500)), list(w.recipients(500))
    assert first == again
    assert len({address for _, address in first}) == 500


def test_the_mailman_post_carries_the_body_only() -> None:
    post = email.message_from_bytes(w.bulk_post("list@example.test"), policy=email.policy.default)
    assert isinstance(post, EmailMessage)
    assert post["Subject"] == w.BULK_SUBJECT
    content = post.get_content()
    assert content.replace("\r\n", "\n") == w.bulk_body()
    assert "Hello" not in content


def _tag(k: int) -> str:
    return f"[q-{k}]"


def _parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_the_inbox_workload_is_the_same_bytes_every_time() -> None:
    assert w.inbox_workload(60, None, _tag).messages == w.inbox_workload(60, None, _tag).messages


def test_the_inbox_mix_without_a_corpus() -> None:
    wl = w.inbox_workload(100, None, _tag)
    assert len(wl.messages) == 100 and wl.corpus == []
    assert len(wl.followups) == 20
    assert sorted(wl.originals) == list(range(80))  # originals first: the k-th opens ticket k
    assert {f.kind for f in wl.followups} == set(w.FOLLOWUP_KINDS)
    tokens = [*wl.originals.values(), *(f.token for f in wl.followups)]
    assert len(set(tokens)) == len(tokens)
    for position, token in wl.originals.items():
        assert f"bench-token: {token}" in _parse(wl.messages[position]).get_body(("plain",)).get_content()


def test_followups_point_at_their_original() -> None:
    wl = w.inbox_workload(200, None, _tag)
    for f in wl.followups:
        reply, original = _parse(wl.messages[f.index]), _parse(wl.messages[f.original])
        assert f.index > f.original
        assert f"bench-token: {f.token}" in reply.get_body(("plain",)).get_content()
        assert str(reply["From"]) == str(original["From"])
        if f.kind == "subject":
            assert _tag(wl.ticket_rank(f.original)) in reply["Subject"]
            assert reply["In-Reply-To"] is None and reply["References"] is None
        elif f.kind == "in-reply-to":
            assert reply["In-Reply-To"] == original["Message-ID"]
            assert not re.search(r"\[q-\d+\]", reply["Subject"])
        else:
            assert reply["In-Reply-To"] != original["Message-ID"]
            assert original["Message-ID"] in reply["References"]


def test_corpus_mails_come_from_permissive_folders_only(tmp_path: Path) -> None:
    mail = b"From: a@example.org\nSubject: hi\n\nbody\n"
    (tmp_path / "django-helpdesk-eml").mkdir()
    (tmp_path / "django-helpdesk-eml" / "one.eml").write_bytes(mail)
    (tmp_path / "django-helpdesk-eml" / "EXPECTED.json").write_bytes(b"{}")
    (tmp_path / "zammad-mail").mkdir()  # AGPL: not used
    (tmp_path / "zammad-mail" / "two.eml").write_bytes(mail)
    (tmp_path / "talon-replies").mkdir()
    (tmp_path / "talon-replies" / "notes.txt").write_bytes(b"no headers here")
    wl = w.inbox_workload(40, tmp_path, _tag)
    assert wl.corpus_files == ["django-helpdesk-eml/one.eml"]
    assert [wl.messages[p] for p in wl.corpus] == [mail]
    assert min(wl.corpus) >= len(wl.originals)  # after the originals: ticket numbers stay predictable
    assert len(wl.messages) == 40


def test_find_corpus_looks_beside_the_repository(tmp_path: Path) -> None:
    repo = tmp_path / "main"
    repo.mkdir()
    assert w.find_corpus(repo) is None
    (tmp_path / "shared" / "corpus").mkdir(parents=True)
    assert w.find_corpus(repo) == tmp_path / "shared" / "corpus"


def test_too_small_an_inbox_is_refused() -> None:
    with pytest.raises(ValueError):
        w.inbox_workload(5, None, _tag)
