"""Pure logic of the mailing engine: CSV import, tokens, VERP, conditions, token buckets, headers."""

from __future__ import annotations

import pytest

from services.mass_mailer.audience import csv_import
from services.mass_mailer.audience.conditions import Condition, matches
from services.mass_mailer.audience.store import next_run
from services.mass_mailer.mailings import links
from services.mass_mailer.mailings.ratelimit import Bucket, RateLimiter
from services.mass_mailer.mailings.sender import list_unsubscribe, pixel_tag, with_pixel

KEY = b"k" * 32


def test_csv_utf8_and_windows_1252_with_row_errors():
    text = (
        "contact_id;email;first_name;last_name;language;email_opt_out;city\r\n"
        "c1;Anna@Example.org;Änne;Groß;de;no;Köln\r\n"
        "c2;not-an-address;Bob;;en;;\r\n"
        ";x@example.org;;;;;\r\n"
        "c3;;Carl;;;yes;\r\n"
        "c1;dup@example.org;;;;;\r\n"
        "c4;d@example.org;;;;maybe;\r\n"
    )
    for encoding, name in (("utf-8", "utf-8"), ("cp1252", "windows-1252")):
        parsed = csv_import.parse(text.encode(encoding))
        assert parsed.encoding == name
        assert [c["contact_id"] for c in parsed.contacts] == ["c1", "c3"]
        first = parsed.contacts[0]
        assert (first["email"], first["first_name"], first["last_name"]) == (
            "anna@example.org",
            "Änne",
            "Groß",
        )
        assert first["custom_fields"] == {"city": "Köln"}
        assert parsed.contacts[1]["email"] is None and parsed.contacts[1]["email_opt_out"] is True
        assert [e.row for e in parsed.errors] == [3, 4, 6, 7]
        assert "not valid" in parsed.errors[0].error and "duplicate" in parsed.errors[2].error


def test_csv_refuses_files_without_contact_id_column_or_text():
    with pytest.raises(csv_import.CsvError, match="contact_id"):
        csv_import.parse(b"email\nx@example.org\n")
    with pytest.raises(csv_import.CsvError, match="empty"):
        csv_import.parse(b"  \n")


def test_unsubscribe_token_round_trip_and_forgery():
    token = links.make_token(KEY, 7, "contact/ü 1")
    assert links.read_token(KEY, token) == links.TokenSubject(7, "contact/ü 1")
    mailing, contact, mac = token.split(".")
    other = links.make_token(KEY, 7, "someone-else").split(".")[1]
    assert links.read_token(KEY, f"{mailing}.{other}.{mac}") is None  # another contact, same MAC
    assert links.read_token(KEY, f"8.{contact}.{mac}") is None  # another mailing
    assert links.read_token(b"x" * 32, token) is None  # another key
    assert links.read_token(KEY, "garbage") is None


def test_verp_round_trip_and_forgery():
    address = links.verp_address(KEY, 3, 12345, "bounces.example.com")
    assert address.startswith("bounce+3.12345.") and address.endswith("@bounces.example.com")
    assert links.read_verp(KEY, f"<{address}>") == (3, 12345)
    assert links.read_verp(KEY, address.replace("12345", "12346")) is None
    assert links.parse_correlation_id(links.correlation_id(3, 12345)) == (3, 12345)


def test_conditions():
    contact = {"email": "a@example.org", "language": "DE", "custom_fields": {"score": "42", "city": "Köln"}}
    cond = [
        Condition(field="language", op="eq", value="de"),
        Condition(field="custom.score", op="gt", value=40),
    ]
    assert matches(cond, contact)
    assert not matches([*cond, Condition(field="custom.city", op="in", value=["Bonn"])], contact)
    assert matches([Condition(field="first_name", op="not_exists")], contact)
    assert not matches([], contact)
    with pytest.raises(ValueError):
        Condition(field="__class__", op="eq", value=1)


def test_next_run_is_the_configured_time_of_day():
    from datetime import UTC, datetime

    after = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    assert next_run("11:00", 1, after) == datetime(2026, 1, 6, 11, 0, tzinfo=UTC)
    assert next_run("13:30", 1, after) == datetime(2026, 1, 5, 13, 30, tzinfo=UTC)
    assert next_run("11:00", 7, after) == datetime(2026, 1, 12, 11, 0, tzinfo=UTC)


def test_bucket_limits_rate():
    bucket = Bucket.new(10.0, now=0.0)
    sent = sum(1 for i in range(1000) if bucket.wait_time(i * 0.01) == 0)  # 10 s of asking every 10 ms
    assert 95 <= sent <= 111  # 10/s plus the initial burst


def replies(bucket: Bucket, start: float, seconds: int, per_second: int, failing_every: int = 0) -> None:
    """``per_second`` replies a second, every ``failing_every``-th a temporary failure."""
    for i in range(seconds * per_second):
        now = start + i / per_second
        if failing_every and i % failing_every == 0:
            bucket.throttled(now)
        else:
            bucket.succeeded(now)


def test_a_throttling_receiver_halves_the_rate_once_a_second_then_it_recovers():
    bucket = Bucket.new(40.0, now=0.0)
    for _ in range(30):  # a burst of failures from sends in flight: one halving, not thirty
        bucket.throttled(0.5)
    bucket.succeeded(1.2)
    assert bucket.rate == 20.0
    replies(bucket, 1.3, 3, 10, failing_every=1)  # all failing: halved once per window
    assert bucket.rate in (2.5, 5.0)
    replies(bucket, 10.0, 20, 10)  # clean windows: +25% (at least 0.5/s) each, up to the limit
    assert bucket.rate == 40.0


def test_occasional_greylisting_does_not_slow_anybody_down():
    bucket = Bucket.new(50.0, now=0.0)
    replies(bucket, 0.0, 30, 50, failing_every=20)  # 5% 451s
    assert bucket.rate == 50.0


def test_an_unlimited_bucket_gets_a_rate_when_throttled_and_loses_it_when_recovered():
    unlimited = Bucket.new(0, now=0.0)
    assert unlimited.wait_time(0.0) == 0
    replies(unlimited, 0.0, 2, 10, failing_every=2)
    assert unlimited.rate == 25.0 and unlimited.wait_time(2.0) >= 0
    replies(unlimited, 3.0, 20, 10)
    assert unlimited.rate == float("inf")


def test_limiter_waits_for_the_slowest_bucket():
    limiter = RateLimiter(relay_limit=0, domain_limit=1.0)
    keys = ["relay:r", "domain:example.org"]
    assert limiter.delay(keys, 0.0) == 0
    assert limiter.delay(keys, 0.0) > 0
    assert limiter.snapshot() == {}


def test_list_unsubscribe_header_is_never_encoded():
    token = links.make_token(KEY, 1, "c" * 90)
    lines = list_unsubscribe(f"https://m.example.com/u/{token}", "unsubscribe@example.com", token)
    assert b"=?" not in lines
    assert lines.startswith(b"List-Unsubscribe: <https://m.example.com/u/")
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in lines
    with pytest.raises(ValueError):
        list_unsubscribe("https://m.example.com/u/x\r\nBcc: evil@example.org", "u@example.com", "x")


def test_pixel_goes_before_the_body_end():
    assert with_pixel("<html><body><p>x</p></body></html>", "https://t/p.gif").endswith(
        '<img src="https://t/p.gif" width="1" height="1" alt="" '
        'style="display:block;border:0;height:1px;width:1px"></body></html>'
    )


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<html><BODY>" + "x" * 3000 + "</Body></html>", "<html><BODY>" + "x" * 3000 + "PIXEL</Body></html>"),
        ("<body>a</body>" + "y" * 3000, "<body>aPIXEL</body>" + "y" * 3000),  # only far from the end
        ("<body>a</body><p>b</body>", "<body>a</body><p>bPIXEL</body>"),  # the last one
        ("<p>no body</p>", "<p>no body</p>PIXEL"),
    ],
)
def test_pixel_finds_the_last_body_end_anywhere(html: str, expected: str) -> None:
    tag = pixel_tag("https://t/p.gif")
    assert with_pixel(html, "https://t/p.gif") == expected.replace("PIXEL", tag)


def test_fast_composer_builds_what_the_stdlib_parses_and_dkim_verifies():
    import email
    import email.policy
    from datetime import UTC, datetime

    import dkim

    from shared.mail import fastmime
    from shared.mail.compose import CompositionError, MailAddress
    from shared.mail.dkim import DkimAlgorithm, DkimSigner, generate_key

    subject = "Grüße für Jürgen — " + "sehr lange Betreffzeile mit Umlauten äöü " * 4
    text = "Zeile 1\n.Zeile mit Punkt\n" + "x" * 200 + "\nÄrger=Gleich\n"
    html = "<p>Hallo Jürgen</p>\n" + "<p>" + "y" * 300 + "</p>"
    raw = fastmime.build(
        sender=MailAddress(email="news@example.com", name="Die News"),
        to=MailAddress(email="j@bücher.example", name='Jürgen "JJ" Groß'),
        reply_to=MailAddress(email="reply@example.com"),
        subject=subject,
        text=text,
        html=html,
        message_id="<bulk.1.2@mail.example.com>",
        date=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        extra_headers=list_unsubscribe("https://m.example.com/u/t", "u@example.com", "t"),
    )
    assert all(len(line) <= 998 for line in raw.split(b"\r\n")) and b"\n" not in raw.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(parsed["Subject"]) == subject.strip()
    assert parsed["To"].addresses[0].display_name == 'Jürgen "JJ" Groß'
    assert parsed["To"].addresses[0].domain == "xn--bcher-kva.example"
    assert str(parsed["From"]) == "Die News <news@example.com>"
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == text
    assert parsed.get_body(("html",)).get_content().replace("\r\n", "\n").rstrip("\n") == html
    key = generate_key("example.com", "s1", DkimAlgorithm.RSA)
    signed = DkimSigner([key]).sign(raw)
    record = key.dns_value().encode()
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)
    with pytest.raises(CompositionError):
        fastmime.build(sender=MailAddress(email="a@example.com"), to=MailAddress(email="b@example.org"),
                       reply_to=None, subject="x\x00y", text="", html="", message_id="<a@b>",
                       date=datetime.now(UTC))  # fmt: skip


@pytest.mark.parametrize("partitions", [1, 2, 6, 7])
def test_batches_go_round_robin_over_the_partitions(partitions: int) -> None:
    from aiokafka.partitioner import murmur2

    from services.mass_mailer.mailings.store import batch_key

    keys = [batch_key(42, number, partitions) for number in range(1, 61)]
    assert len(set(keys)) == len(keys)
    placed = [(murmur2(key.encode()) & 0x7FFFFFFF) % partitions for key in keys]
    assert placed == [number % partitions for number in range(1, 61)]


async def test_each_sender_keeps_to_its_share_of_the_service_wide_limit():
    from services.mass_mailer.mailings.handlers import RateShare

    limiter = RateLimiter(relay_limit=60.0, domain_limit=0)
    assert limiter.bucket("relay:r", 0.0).limit == 60.0
    await RateShare(limiter, 6).on_partitions_assigned({("bulk", 0), ("bulk", 1)})
    assert limiter.buckets["relay:r"].limit == 20.0 and limiter.buckets["relay:r"].rate == 20.0
    assert limiter.bucket("relay:other", 0.0).limit == 20.0
    assert limiter.bucket("domain:example.org", 0.0).limit == 0  # unlimited stays unlimited
    sent = sum(1 for i in range(1000) if limiter.delay(["relay:r"], 10 + i * 0.01) == 0)
    assert 190 <= sent <= 231  # 10 s at 20/s plus the burst
    await RateShare(limiter, 6).on_partitions_assigned(set())  # none left: still a finite limit
    assert limiter.buckets["relay:r"].limit == 10.0
    with pytest.raises(ValueError):
        limiter.set_share(0)
