from email import message_from_bytes, policy

import pytest

from shared.mail.compose import (
    CompositionError,
    MailAddress,
    MailDraft,
    OutgoingAttachment,
    compose,
    safe_filename,
)


def draft(**overrides) -> MailDraft:
    values = {
        "sender": MailAddress(email="noreply@example.com", name="Sender"),
        "to": [MailAddress(email="to@example.org")],
        "subject": "Hello",
        "text": "plain",
    }
    values.update(overrides)
    return MailDraft(**values)


def reparse(raw: bytes):
    return message_from_bytes(raw, policy=policy.default)


def test_crlf_in_values_never_creates_a_header():
    msg = compose(
        draft(
            sender=MailAddress(email="noreply@example.com", name="Evil\r\nBcc: victim@example.net"),
            subject="Hi\r\nBcc: victim@example.net",
            headers={"X-Campaign": "a\r\nBcc: victim@example.net"},
        ),
        "example.com",
    )
    parsed = reparse(msg.as_bytes())
    assert parsed["Bcc"] is None
    assert sorted(k.lower() for k in parsed.keys()) == sorted(
        [
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "x-campaign",
            "mime-version",
            "content-type",
            "content-transfer-encoding",
        ]
    )
    assert "victim@example.net" in str(parsed["Subject"])


def test_non_ascii_is_encoded_and_long_subjects_fold_safely():
    subject = "Grüße aus Köln " * 130  # ~2,000 characters
    msg = compose(
        draft(subject=subject, sender=MailAddress(email="a@example.com", name="Jürgen Straße")), "example.com"
    )
    raw = msg.as_bytes()
    raw.decode("ascii")  # every header is 7-bit
    assert b"Subject:\r\n" not in raw and b"From:\r\n" not in raw
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        assert len(line) <= 998
    parsed = reparse(raw)
    assert str(parsed["Subject"]) == subject.strip()
    assert parsed["From"].addresses[0].display_name == "Jürgen Straße"


def test_reserved_and_malformed_custom_headers_are_refused():
    with pytest.raises(CompositionError):
        compose(draft(headers={"Bcc": "x@example.com"}), "example.com")
    with pytest.raises(CompositionError):
        compose(draft(headers={"X Bad": "1"}), "example.com")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("a\x00b.txt", "ab.txt"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("...", "attachment"),
    ],
)
def test_attachment_names_lose_paths_and_nul(name, expected):
    assert safe_filename(name) == expected


def test_attachment_cap_and_parts():
    msg = compose(
        draft(
            html="<p>hi</p>",
            attachments=[
                OutgoingAttachment(filename="../r.pdf", content=b"%PDF", content_type="application/pdf")
            ],
        ),
        "example.com",
    )
    parsed = reparse(msg.as_bytes())
    attachments = list(parsed.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["r.pdf"]
    assert parsed.get_body(("html",)).get_content().strip() == "<p>hi</p>"
    with pytest.raises(CompositionError, match="5 MB"):
        compose(
            draft(attachments=[OutgoingAttachment(filename="big", content=b"x" * (5 * 1024 * 1024 + 1))]),
            "example.com",
        )


def test_message_id_uses_our_domain():
    msg = compose(draft(), "mail.example.com")
    assert str(msg["Message-ID"]).endswith("@mail.example.com>")


def test_thread_headers_are_never_encoded_and_fold_between_ids():
    ids = [f"<{'r' * 90}{i}@example.com>" for i in range(3)]
    msg = compose(draft(in_reply_to=ids[-1], references=ids), "example.com")
    raw = msg.as_bytes()
    assert b"=?utf-8?" not in raw.split(b"\r\n\r\n", 1)[0]
    parsed = reparse(raw)
    assert str(parsed["References"]).split() == ids
    assert str(parsed["In-Reply-To"]) == ids[-1]
    with pytest.raises(CompositionError):
        compose(draft(references=["<a@b> junk\r\nBcc: x@example.com"]), "example.com")


def test_hostile_everything_gives_exactly_the_intended_headers_and_parts():
    evil = "Évil\r\nBcc: victim@example.net\r\n\r\n<script>"
    msg = compose(
        draft(
            sender=MailAddress(email="noreply@example.com", name=evil),
            to=[
                MailAddress(email="to@example.org", name=evil),
                MailAddress(email="zoë@bücher.example", name="Zoë"),
            ],
            cc=[MailAddress(email="cc@example.org", name="Ça va")],
            reply_to=MailAddress(email="help@example.com", name=evil),
            subject=evil * 100,
            text="Grüße\r\nBcc: body-is-fine@example.net",
            html="<p>Grüße</p>",
            headers={"X-Campaign": evil, "X-Unicode": "日本語"},
            attachments=[
                OutgoingAttachment(filename="../../etc/pass\x00wd\r\nX-Injected: 1", content=b"A" * 10),
                OutgoingAttachment(
                    filename="logo.png", content=b"\x89PNG", content_type="image/png", inline_cid="logo@x"
                ),
            ],
        ),
        "example.com",
    )
    raw = msg.as_bytes()
    parsed = reparse(raw)
    top = sorted(k.lower() for k in parsed.keys())
    assert top == sorted(
        [
            "from",
            "to",
            "cc",
            "reply-to",
            "subject",
            "date",
            "message-id",
            "x-campaign",
            "x-unicode",
            "mime-version",
            "content-type",
        ]
    )
    assert parsed["Bcc"] is None
    for part in parsed.walk():
        assert part["Bcc"] is None and part["X-Injected"] is None
    assert parsed["To"].addresses[1].domain == "xn--bcher-kva.example"
    structure = [p.get_content_type() for p in parsed.walk()]
    assert structure == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "multipart/related",
        "text/html",
        "image/png",
        "application/octet-stream",
    ]
    attachment = list(parsed.iter_attachments())[-1]
    assert "/" not in attachment.get_filename() and "\x00" not in attachment.get_filename()
    assert attachment.get_content() == b"A" * 10
    assert parsed.get_body(("plain",)).get_content().startswith("Grüße")
