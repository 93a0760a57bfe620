"""Unit tests for the parsing and classification rules (no servers)."""

from __future__ import annotations

import pytest

from services.mail_scanner.attachments import AttachmentStore, AttachmentTooLarge, sanitize_filename
from services.mail_scanner.decoding import decode_bytes, decode_header_value
from services.mail_scanner.html_text import html_to_text, safe_html
from services.mail_scanner.parsing import parse_message
from services.mail_scanner.references import (
    make_message_id,
    strip_reply_prefixes,
    ticket_number_from,
    verify_message_id,
)
from services.mail_scanner.reply_strip import strip_reply

SECRET = b"s3cret"


def mail(headers: str, body: str = "Hello\r\n") -> bytes:
    return (headers.strip().replace("\n", "\r\n") + "\r\n\r\n" + body).encode("utf-8")


@pytest.mark.parametrize(
    "subject",
    ["Re: TT1042 printer", "RE: AW: SV: VS: Fwd: FW: TT1042", "Aw: Sv: Vs: VB: Antw: Réf. : [TT1042]",
     "Re[2]: Re^3: TT1042", "Re: Re: Re: Re: Re: Re: TT#1042"],
)  # fmt: skip
def test_ticket_number_after_reply_prefixes(subject: str) -> None:
    assert ticket_number_from(subject, "", "TT") == "TT1042"


def test_ticket_number_body_marker_and_misses() -> None:
    assert ticket_number_from("hello", "text [ticket:TT77] more", "TT") == "TT77"
    assert ticket_number_from("hello", "I mean TT77 in passing", "TT") is None
    assert ticket_number_from("ATT1042 and XTT5", "", "TT") is None
    assert ticket_number_from("Re: HD-9", "", "HD-") == "HD-9"


def test_strip_reply_prefixes() -> None:
    assert strip_reply_prefixes("Re: AW:  Fwd: Re[2]: Hello   world") == "Hello world"
    assert strip_reply_prefixes("Regarding the invoice") == "Regarding the invoice"


def test_signed_message_ids() -> None:
    mid = make_message_id(42, 7, SECRET, "example.com")
    assert verify_message_id(mid, SECRET, "example.com") == 42
    assert verify_message_id(mid, b"other", "example.com") is None
    assert verify_message_id(mid, SECRET, "evil.com") is None
    forged = mid.replace("tt.42.", "tt.43.")
    assert verify_message_id(forged, SECRET, "example.com") is None
    assert verify_message_id("<random@example.com>", SECRET, "example.com") is None
    assert make_message_id(42, None, SECRET, "example.com") != make_message_id(
        42, None, SECRET, "example.com"
    )


def test_charset_repair() -> None:
    assert decode_bytes("Grüße".encode(), "iso-8859-1") == "Grüße"  # mislabelled UTF-8
    assert decode_bytes("Grüße".encode("cp1252"), "utf-8") == "Grüße"  # lying UTF-8 label
    assert decode_bytes("Grüße".encode("cp1252"), None) == "Grüße"
    assert decode_bytes("Grüße".encode(), "utf8") == "Grüße"
    assert decode_bytes("中文".encode("gb18030"), "gb2312") == "中文"
    assert decode_header_value("=?unicode-1-1-utf-7?Q?+ANw-bung?=") == "Übung"
    assert decode_header_value("=?GB2312?B?1tDOxA==?=") == "中文"
    assert decode_header_value("=?utf-8?q?a?= =?utf-8?q?b?=") == "ab"
    assert decode_header_value("=?bogus?q?x?=") == "x"


def test_from_fallbacks() -> None:
    parsed = parse_message(mail("From: \nReply-To: Real <real@example.com>\nSubject: x"))
    assert parsed.from_email == "real@example.com" and parsed.from_display_name == "Real"
    parsed = parse_message(mail("From: garbage\nReturn-Path: <rp@example.com>\nSubject: x"))
    assert parsed.from_email == "rp@example.com"
    parsed = parse_message(mail("From: =?utf-8?q?M=C3=BCller=2C_Hans?= <h@example.com>"))
    assert parsed.from_display_name == "Müller, Hans" and parsed.from_email == "h@example.com"


def test_auto_reply_rules() -> None:
    for header in ("Auto-Submitted: auto-replied", "Precedence: bulk", "Precedence: junk", "Precedence: list",
                   "X-Auto-Response-Suppress: All", "X-Autoreply: yes", "X-Autorespond: 1"):  # fmt: skip
        parsed = parse_message(mail(f"From: a@example.com\nSubject: hi\n{header}"))
        assert parsed.kind == "auto_reply", header
    assert parse_message(mail("From: a@example.com\nSubject: hi\nAuto-Submitted: no")).kind == "normal"
    for subject in (
        "Out of Office: hi",
        "Abwesenheitsnotiz",
        "Réponse automatique",
        "自动回复: x",
        "Frånvaro",
    ):
        assert parse_message(mail(f"From: a@example.com\nSubject: {subject}")).kind == "auto_reply", subject
    body = "I am currently out of the office until Monday.\r\n"
    assert parse_message(mail("From: a@example.com\nSubject: Re: TT5", body)).kind == "auto_reply"
    for subject in ("printer broken", "Urlaub buchen", "vacation rental in May", "Absence form"):
        assert parse_message(mail(f"From: a@example.com\nSubject: {subject}")).kind == "normal", subject


DSN = """From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
To: me@example.com
Subject: Undelivered Mail Returned to Sender
Message-ID: <bounce1@mx.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary=B

--B
Content-Type: text/plain

I'm sorry.
--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; gone@example.org
Action: failed
Status: {status}
Diagnostic-Code: smtp; 550 5.1.1 user unknown

--B
Content-Type: message/rfc822

Message-ID: <orig-1@example.com>
From: me@example.com
Subject: hi

body
--B--
"""


def test_dsn_bounce_hard_and_soft() -> None:
    parsed = parse_message(mail(DSN.format(status="5.1.1").split("\n\n", 1)[0], DSN.split("\n\n", 1)[1]))
    assert parsed.kind == "bounce" and parsed.bounce is not None
    assert (
        parsed.bounce.recipient == "gone@example.org"
        and parsed.bounce.original_message_id == "<orig-1@example.com>"
    )
    assert parsed.bounce.status == "5.1.1" and parsed.bounce.hard is True
    soft = DSN.format(status="4.2.2")
    parsed = parse_message(mail(soft.split("\n\n", 1)[0], soft.split("\n\n", 1)[1]))
    assert parsed.bounce is not None and parsed.bounce.status == "4.2.2" and parsed.bounce.hard is False


def test_plain_text_bounce_from_mailer_daemon() -> None:
    body = (
        "This message was created automatically by mail delivery software.\r\n\r\n"
        "A message that you sent could not be delivered to one or more of its\r\n"
        "recipients. This is a permanent error. The following address(es) failed:\r\n\r\n"
        "  lost@example.org\r\n\r\n------ This is a copy of the message, including all the headers. ------\r\n"
        "Message-ID: <o2@example.com>\r\n"
    )
    parsed = parse_message(
        mail("From: Mailer-Daemon@mx.example.net\nReturn-Path: <>\nSubject: Mail delivery failed", body)
    )
    assert parsed.kind == "bounce" and parsed.bounce is not None
    assert parsed.bounce.recipient == "lost@example.org" and parsed.bounce.hard
    assert parsed.bounce.original_message_id == "<o2@example.com>"


def test_reply_stripping() -> None:
    cases = {
        "Thanks!\n\nOn Mon, Jan 1, 2024 at 10:00 AM John <j@example.com> wrote:\n> old": "Thanks!",
        "Danke\n\nAm 01.01.2024 um 10:00 schrieb Hans <h@example.com>:\n> alt": "Danke",
        "Ok\n\n-----Original Message-----\nFrom: x\nSent: y\nTo: z\nSubject: s\n\nold": "Ok",
        "Ok\n\nFrom: A <a@example.com>\nSent: Monday\nTo: b@example.com\nSubject: s\n\nold": "Ok",
        "Yes\n> quoted\n> more": "Yes",
        "Fine\n\n-- \nJohn Doe\nACME": "Fine",
        "Fine\n\nSent from my iPhone": "Fine",
    }
    for text, expected in cases.items():
        assert strip_reply(text) == expected, text
    parsed = parse_message(
        mail("From: a@example.com\nSubject: x", "New\r\n\r\nOn Monday Bob <b@x.org> wrote:\r\n> old\r\n")
    )
    assert parsed.reply_text == "New" and "old" in parsed.text


def test_html_safe_and_text() -> None:
    source = (
        '<p onclick="x()">Hi<script>alert(1)</script></p><img src="cid:logo@x"><a href="javascript:x">l</a>'
    )
    cleaned = safe_html(source)
    assert "script" not in cleaned and "onclick" not in cleaned and "javascript" not in cleaned
    assert 'src="cid:logo@x"' in cleaned
    assert (
        html_to_text("<p>Hello<br>World</p><style>p{}</style><blockquote>old</blockquote>")
        == "Hello\nWorld\n\n> old"
    )


def test_attachment_store(tmp_path) -> None:
    store = AttachmentStore(tmp_path, max_bytes=10)
    sha = store.put(b"abc")
    assert store.put(b"abc") == sha and store.get(sha) == b"abc" and store.path(sha).name == sha
    with pytest.raises(AttachmentTooLarge):
        store.put(b"x" * 11)
    with pytest.raises(ValueError):
        store.path("../../etc/passwd")
    assert sanitize_filename("../../etc/passwd") == "passwd"
    assert sanitize_filename("a\u202egnp.exe") == "agnp.exe"
    assert sanitize_filename("CON") == "_CON"


def test_uuencode_and_nested_forward_attachments() -> None:
    import binascii

    line = binascii.b2a_uu(b"hello world").decode()
    body = f"see file\r\n\r\nbegin 644 note.txt\r\n{line}`\r\nend\r\n"
    parsed = parse_message(mail("From: a@example.com\nSubject: uu", body))
    assert [a.filename for a in parsed.attachments] == ["note.txt"]
    assert parsed.attachments[0].content == b"hello world" and "begin 644" not in parsed.text
    inner = "Subject: inner\r\nContent-Type: multipart/mixed; boundary=I\r\n\r\n--I\r\nContent-Type: text/plain\r\n\r\nx\r\n--I\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n--I--\r\n"
    outer = f"--O\r\nContent-Type: text/plain\r\n\r\nfwd\r\n--O\r\nContent-Type: message/rfc822\r\n\r\n{inner}--O--\r\n"
    parsed = parse_message(
        mail("From: a@example.com\nSubject: fwd\nContent-Type: multipart/mixed; boundary=O", outer)
    )
    names = {a.filename for a in parsed.attachments}
    assert "a.pdf" in names and "inner.eml" in names and parsed.text.strip() == "fwd"
    pdf = next(a for a in parsed.attachments if a.filename == "a.pdf")
    assert pdf.size == 4 and len(pdf.sha256) == 64 and "content" not in pdf.model_dump()


def test_oversize_and_hopeless() -> None:
    raw = mail("From: a@example.com\nSubject: big", "x" * 5000)
    parsed = parse_message(raw, max_bytes=1000)
    assert parsed.oversize and parsed.subject == "big" and parsed.text == ""
    assert parse_message(b"").error
    assert parse_message(b"\x00\xff" * 100).error
    assert parse_message(b"Subject: =?bogus?q?x?=\r\n\r\n").error is None


def _tnef(files: dict[str, bytes]) -> bytes:
    import struct

    def attribute(level: int, name: int, kind: int, data: bytes) -> bytes:
        checksum = sum(data) & 0xFFFF
        return struct.pack("<BHHI", level, name, kind, len(data)) + data + struct.pack("<H", checksum)

    blob = struct.pack("<IH", 0x223E9F78, 1)
    for name, data in files.items():
        blob += attribute(2, 0x9002, 0x0006, b"\x01\x00\xff\xff\xff\xff" + b"\x00" * 8)
        blob += attribute(2, 0x8010, 0x0001, name.encode() + b"\x00")
        blob += attribute(2, 0x800F, 0x0006, data)
    return blob


def test_tnef_winmail_dat_files_become_attachments() -> None:
    import base64

    blob = base64.b64encode(_tnef({"report.pdf": b"%PDF-1.4 tnef", "notes.txt": b"hi"})).decode()
    body = (
        "--W\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--W\r\n"
        'Content-Type: application/ms-tnef; name="winmail.dat"\r\nContent-Transfer-Encoding: base64\r\n'
        f'Content-Disposition: attachment; filename="winmail.dat"\r\n\r\n{blob}\r\n--W--\r\n'
    )
    parsed = parse_message(
        mail("From: a@example.com\nSubject: t\nContent-Type: multipart/mixed; boundary=W", body)
    )
    found = {a.filename: a.content for a in parsed.attachments}
    assert found == {"report.pdf": b"%PDF-1.4 tnef", "notes.txt": b"hi"}
    assert all(a.source == "tnef" for a in parsed.attachments)


def test_inline_cid_image_kept_with_html_and_8bit_headers() -> None:
    body = (
        '--R\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Logo <img src="cid:logo1"></p>\r\n--R\r\n'
        "Content-Type: image/png\r\nContent-ID: <logo1>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--R--\r\n"
    )
    raw = mail("From: a@example.com\nSubject: x\nContent-Type: multipart/related; boundary=R", body)
    parsed = parse_message(raw)
    assert 'src="cid:logo1"' in (parsed.html or "") and parsed.text == "Logo"
    image = parsed.attachments[0]
    assert image.content_id == "logo1" and image.inline and image.content_type == "image/png"
    gb = (
        b"From: a@example.com\r\nSubject: "
        + "中文主题".encode("gb2312")
        + b"\r\nContent-Type: text/plain; charset=gb2312\r\n\r\nx"
    )
    assert parse_message(gb).subject == "中文主题"


def test_raw_8bit_bytes_never_leak_as_surrogates() -> None:
    raw = b"From: a@example.com\r\nMessage-ID: <r\xe4w@x>\r\nReferences: <a\xff@x>\r\nSubject: x\r\n\r\nbody"
    parsed = parse_message(raw)
    assert parsed.message_id == "<räw@x>"
    parsed.model_dump_json(by_alias=True)  # surrogates would make this raise
