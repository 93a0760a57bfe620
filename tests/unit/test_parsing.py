from services.mail_scanner.parsing import parse_message

MULTIPART = (
    b"From: =?utf-8?q?J=C3=BCrgen?= <J@Example.com>\r\n"
    b'To: a@example.org, "B" <b@example.org>\r\n'
    b"Cc: c@example.org\r\n"
    b"Subject: Re: [TT1042] Printer\r\n"
    b"Message-ID: <m1@example.com>\r\n"
    b"In-Reply-To: <orig@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
    b"--XX\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Gr=FC=DFe\r\n"
    b'--XX\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="../../x.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n--XX--\r\n"
)


def test_multipart_mail_is_parsed():
    parsed = parse_message(MULTIPART)
    assert parsed.from_[0].email == "j@example.com" and parsed.from_[0].name == "Jürgen"
    assert [a.email for a in parsed.to] == ["a@example.org", "b@example.org"]
    assert [a.email for a in parsed.cc] == ["c@example.org"]
    assert parsed.in_reply_to == ["<orig@example.org>"]
    assert parsed.text.strip() == "Grüße"
    assert parsed.attachments[0].filename == "x.pdf" and parsed.attachments[0].size == 4


def test_garbage_never_raises():
    for raw in (
        b"",
        b"\x00\xff" * 100,
        b"Subject: =?bogus?q?x?=\r\n\r\n",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary",
    ):
        parse_message(raw)
