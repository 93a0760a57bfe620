"""compose_bytes (the fast composer) against compose().as_bytes() (the stdlib one): for any
draft, both refuse it, or the fast one's headers read back exactly as the draft says (the stdlib
itself does not always manage that: it puts spaces between some encoded words) and its parts
read the same as the stdlib's (types, names, contents)."""

from __future__ import annotations

import binascii
import email
import email.policy
import re
from email.header import decode_header, make_header
from email.utils import getaddresses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.mail.compose import (
    CompositionError,
    MailAddress,
    MailDraft,
    OutgoingAttachment,
    clean_header_value,
    compose,
)
from shared.mail.fastmime import compose_bytes, qp

DOMAIN = "mail.example.com"
THREAD_HEADERS = ("Message-ID", "In-Reply-To", "References")

# Encoded words a hostile sender might type as plain text: readers decode them.
ENCODED = [
    "=?utf-8?q?a=0D=0ABcc:_x@evil.example?=",
    "=?utf-8?b?SGkNCkJjYzogeEBldmlsLmV4YW1wbGU=?=",
    "=?utf-8?q?harmless_words?=",
    "=?iso-8859-1?q?caf=E9?=",
    "=?bogus?q?x?=",
]
names = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40),
    st.sampled_from(ENCODED),
)
local_parts = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,20}", fullmatch=True)
domains = st.sampled_from(["example.com", "sub.example.org", "bücher.example", "xn--bcher-kva.example"])
addresses = st.builds(
    lambda local, domain, name: MailAddress(email=f"{local}@{domain}", name=name), local_parts, domains, names
)
bodies = st.one_of(st.none(), st.text(max_size=300))
msg_ids = st.from_regex(r"<[a-z0-9.]{1,30}@[a-z.]{1,20}>", fullmatch=True)
attachments = st.builds(
    OutgoingAttachment,
    filename=st.text(max_size=80),
    content=st.binary(max_size=400),
    content_type=st.sampled_from(["application/pdf", "text/calendar", "image/png", "application/x-foo"]),
)
drafts = st.builds(
    MailDraft,
    sender=addresses,
    to=st.lists(addresses, min_size=1, max_size=4),
    cc=st.lists(addresses, max_size=3),
    reply_to=st.one_of(st.none(), addresses),
    subject=st.one_of(st.text(max_size=200), st.sampled_from(ENCODED)),
    text=bodies,
    html=bodies,
    headers=st.dictionaries(st.sampled_from(["X-Campaign", "X-Ticket", "Auto-Submitted"]), names, max_size=2),
    attachments=st.lists(attachments, max_size=3),
    message_id=msg_ids,
    in_reply_to=st.one_of(st.none(), msg_ids),
    references=st.lists(msg_ids, max_size=5),
)


def reading(raw: bytes) -> dict[str, object]:
    """What a mail client shows: decoded headers, addresses, and each part's type, name, content."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    legacy = email.message_from_bytes(raw)  # raw header text for the addresses, see below
    seen: dict[str, object] = {}
    for name in ("From", "To", "Cc", "Reply-To"):
        # Display names are decoded as RFC 2047 section 6.2 says (whitespace between adjacent
        # encoded words is dropped): the modern parser keeps it in some phrases, which mail
        # clients do not, so it would misread correct messages (ours and the stdlib's alike).
        values = legacy.get_all(name)
        seen[name] = (
            None
            if values is None
            else [
                (str(make_header(decode_header(display))), address)
                for display, address in getaddresses([" ".join(v.split()) for v in values])
            ]
        )
    seen["Subject"] = str(msg["Subject"] or "")
    for name in THREAD_HEADERS:
        seen[name] = " ".join(str(msg[name] or "").split())
    for name in ("X-Campaign", "X-Ticket", "Auto-Submitted"):
        seen[name] = None if msg[name] is None else str(msg[name])
    parts = []
    for part in msg.walk():
        if part.is_multipart():
            parts.append(("multipart", part.get_content_subtype()))
            continue
        content = part.get_content()
        if isinstance(content, str):
            content = content.replace("\r\n", "\n").rstrip("\n")
        parts.append((part.get_content_type(), part.get_filename(), content))
    seen["parts"] = parts
    return seen


def intended(draft: MailDraft) -> dict[str, object]:
    """The headers as the draft means them."""

    def people(items: list[MailAddress]) -> list[tuple[str, str]]:
        result = []
        for a in items:
            local, _, domain = a.email.rpartition("@")
            result.append((clean_header_value(a.name, "name"), f"{local}@{domain.encode('idna').decode()}"))
        return result

    return {
        "From": people([draft.sender]),
        "To": people(draft.to),
        "Cc": people(draft.cc) or None,
        "Reply-To": people([draft.reply_to]) if draft.reply_to else None,
        "Subject": clean_header_value(draft.subject, "subject"),
        "Message-ID": draft.message_id,
        "In-Reply-To": draft.in_reply_to or "",
        "References": " ".join(draft.references),
        **{
            name: clean_header_value(draft.headers[name], name) if name in draft.headers else None
            for name in ("X-Campaign", "X-Ticket", "Auto-Submitted")
        },
    }


def well_formed(raw: bytes) -> None:
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")  # what CrlfMessage promises the signer and SMTP
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"\r\n[^ \t]+:\r\n", head)  # never "Name:" alone before a fold


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drafts)
def test_reads_the_same_as_the_stdlib_composer(draft: MailDraft) -> None:
    try:
        expected = compose(draft, DOMAIN).as_bytes()
    except CompositionError as refused:
        if "encoded line break" not in str(refused):
            with pytest.raises(CompositionError):
                compose_bytes(draft, DOMAIN)
            return
        # The stdlib cannot send such text literally and refuses it; ours sends it literally.
        raw = compose_bytes(draft, DOMAIN)
        well_formed(raw)
        ours = reading(raw)
        ours.pop("parts")
        assert ours == intended(draft)
        return
    raw = compose_bytes(draft, DOMAIN)
    well_formed(raw)
    ours = reading(raw)
    assert ours.pop("parts") == reading(expected)["parts"]
    assert ours == intended(draft)


def test_typed_encoded_words_are_sent_literally() -> None:
    hostile = "=?utf-8?q?a=0D=0ABcc:_victim@evil.example?="
    draft = MailDraft(
        sender=MailAddress(email="a@example.com", name=hostile),
        to=[MailAddress(email="b@example.org")],
        subject=hostile,
        text="x",
        message_id="<m@mail.example.com>",
    )
    msg = email.message_from_bytes(compose_bytes(draft, DOMAIN), policy=email.policy.default)
    assert str(msg["Subject"]) == hostile and msg["From"].addresses[0].display_name == hostile
    assert msg["Bcc"] is None
    with pytest.raises(CompositionError, match="encoded line break"):
        compose(draft, DOMAIN)


def test_header_injection_never_makes_a_header() -> None:
    draft = MailDraft(
        sender=MailAddress(email="a@example.com", name="Evil\r\nBcc: victim@example.org"),
        to=[MailAddress(email="b@example.org", name="x\nX-Injected: 1")],
        subject="Hi\r\nBcc: victim@example.org",
        text="body",
        headers={"X-Campaign": "c\r\nX-Injected: 2"},
        message_id="<m@mail.example.com>",
    )
    msg = email.message_from_bytes(compose_bytes(draft, DOMAIN), policy=email.policy.default)
    assert msg["Bcc"] is None and msg["X-Injected"] is None
    assert "Bcc: victim@example.org" in str(msg["Subject"])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"headers": {"Bcc": "x@example.org"}}, "not allowed"),
        ({"headers": {"Bad Name": "x"}}, "not allowed"),
        ({"subject": "a\x00b"}, "control characters"),
        ({"to": [MailAddress(email="a@b@c.org")]}, "not an email address"),
        ({"attachments": [OutgoingAttachment(filename="x", content=b"1" * (5 * 1024 * 1024 + 1))]}, "5 MB"),
        (
            {"attachments": [OutgoingAttachment(filename="x", content=b"1", content_type="text/x;y")]},
            "content",
        ),
        ({"references": ["not an id"]}, "message ids"),
    ],
)
def test_refuses_what_compose_refuses(change: dict[str, object], reason: str) -> None:
    draft = MailDraft(
        sender=MailAddress(email="a@example.com"),
        to=[MailAddress(email="b@example.org")],
        text="x",
        message_id="<m@mail.example.com>",
    ).model_copy(update=change)
    with pytest.raises(CompositionError, match=reason):
        compose(draft, DOMAIN)
    with pytest.raises(CompositionError, match=reason):
        compose_bytes(draft, DOMAIN)


def test_attachment_names_lose_paths_and_keep_unicode() -> None:
    draft = MailDraft(
        sender=MailAddress(email="a@example.com"),
        to=[MailAddress(email="b@example.org")],
        text="x",
        attachments=[
            OutgoingAttachment(filename="../../etc/Prüfbericht für März 2026 " * 5 + ".pdf", content=b"%PDF")
        ],
    )
    raw = compose_bytes(draft, DOMAIN)
    well_formed(raw)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    (attachment,) = list(msg.iter_attachments())
    assert attachment.get_filename() == reading(compose(draft, DOMAIN).as_bytes())["parts"][-1][1]
    assert "/" not in attachment.get_filename() and "März" in attachment.get_filename()
    assert attachment.get_content() == b"%PDF"


_qp_texts = st.lists(
    st.sampled_from([" ", "\t", "\n", "\r\n", "\r", "=", ".", "From ", "ä", "€", "x" * 30, "y" * 75, "<p>"]),
    max_size=40,
).map("".join)


@given(st.lists(_qp_texts, min_size=1, max_size=4))
def test_line_cached_quoted_printable_equals_encoding_the_whole_text(texts: list[str]) -> None:
    for text in texts + texts:  # the second round reads its lines from the cache
        whole = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
        expected = binascii.b2a_qp(whole, quotetabs=False, istext=True, header=False)
        assert qp(text) == expected.replace(b"\n", b"\r\n")
        assert binascii.a2b_qp(qp(text)).replace(b"\r\n", b"\n") == whole
