"""Reply classification, relay configuration, and the aiosmtplib internals our DATA split uses."""

import asyncio
import ssl

import aiosmtplib
import pytest
from aiosmtplib.protocol import SMTPProtocol
from pydantic import ValidationError

from shared.mail.smtp import (
    Outcome,
    Refusal,
    RelayConfig,
    SendResult,
    _all_refused,
    _Transaction,
    classify,
    describe,
    encode_data,
    scrub,
    send_data,
)
from shared.settings import Settings, TlsMode


@pytest.mark.parametrize(
    ("code", "message", "outcome", "enhanced"),
    [
        (250, "2.0.0 OK queued as 1234", Outcome.SENT, "2.0.0"),
        (251, "User not local; will forward", Outcome.SENT, None),
        (421, "4.4.2 closing connection", Outcome.RETRYABLE, "4.4.2"),
        (450, "4.2.1 mailbox busy", Outcome.RETRYABLE, "4.2.1"),
        (451, "4.3.0 Try again later", Outcome.RETRYABLE, "4.3.0"),
        (452, "  4.5.3 Too many recipients", Outcome.RETRYABLE, "4.5.3"),
        (454, "4.7.0 Temporary authentication failure", Outcome.RETRYABLE, "4.7.0"),
        (535, "5.7.8 Authentication credentials invalid", Outcome.PERMANENT, "5.7.8"),
        (550, "5.1.1 <x@example.test>: Recipient address rejected", Outcome.PERMANENT, "5.1.1"),
        (552, "5.3.4 Message size exceeds fixed limit", Outcome.PERMANENT, "5.3.4"),
        (554, "Transaction failed", Outcome.PERMANENT, None),
        (550, "5.1.10 Recipient not found\nmore text", Outcome.PERMANENT, "5.1.10"),
        (550, "5.1.1.2 not an enhanced code", Outcome.PERMANENT, None),
        (550, "No such user 5.1.1", Outcome.PERMANENT, None),
        (None, "Connection lost", Outcome.RETRYABLE, None),
        (-1, "Malformed SMTP response line", Outcome.RETRYABLE, None),
        (354, "unexpected intermediate reply", Outcome.RETRYABLE, None),
        (250, "", Outcome.SENT, None),
    ],
)
def test_classify(code, message, outcome, enhanced):
    assert classify(code, message) == (outcome, enhanced)


def test_all_recipients_refused_is_retryable_if_any_refusal_was_temporary():
    gone = Refusal(550, "5.1.1 No such user", "5.1.1")
    full = Refusal(452, "4.2.2 Mailbox full", "4.2.2")
    permanent = _all_refused({"a@x.test": gone})
    assert (permanent.outcome, permanent.code, permanent.enhanced_code) == (Outcome.PERMANENT, 550, "5.1.1")
    mixed = _all_refused({"a@x.test": gone, "b@x.test": full})
    assert (mixed.outcome, mixed.code, mixed.enhanced_code) == (Outcome.RETRYABLE, 452, "4.2.2")
    assert mixed.refused["a@x.test"] == gone and not mixed.handed_over


def test_refusal_indexes_like_the_former_code_message_tuple():
    code, message = Refusal(550, "5.1.1 No such user", "5.1.1")[:2]
    assert (code, message) == (550, "5.1.1 No such user")


def test_send_result_defaults_keep_old_positional_construction():
    result = SendResult(Outcome.SENT, 250, None, "OK", {})
    assert result.handed_over is False and result.refused == {}


def test_relay_auth_defaults_and_validation():
    assert RelayConfig(host="h", port=25).auth == "none"
    assert RelayConfig(host="h", port=25, username="u", password="p").auth == "plain"
    assert RelayConfig(host="h", port=25, auth="login", username="u", password="p").auth == "login"
    with pytest.raises(ValidationError, match="needs a password"):
        RelayConfig(host="h", port=25, username="u")
    with pytest.raises(ValidationError, match="needs a username"):
        RelayConfig(host="h", port=25, auth="xoauth2", oauth_token="t")
    with pytest.raises(ValidationError, match="needs an oauth_token"):
        RelayConfig(host="h", port=25, auth="xoauth2", username="u")
    with pytest.raises(ValidationError):
        RelayConfig(host="h", port=25, auth="cram-md5", username="u", password="p")
    with pytest.raises(ValidationError):
        RelayConfig(host="h", port=25, tls_verify=False)  # unknown option: extra="forbid"


def test_relay_timeouts_and_legacy_timeout_s():
    relay = RelayConfig(host="h", port=25, timeout_s=7)
    assert (relay.connect_timeout_s, relay.command_timeout_s) == (7, 7)
    relay = RelayConfig(host="h", port=25, timeout_s=7, command_timeout_s=60)
    assert (relay.connect_timeout_s, relay.command_timeout_s) == (7, 60)
    with pytest.raises(ValidationError):
        RelayConfig(host="h", port=25, connect_timeout_s=0)


def test_relay_from_settings():
    settings = Settings(
        smtp_host="relay.example.test",
        smtp_port=587,
        smtp_tls=TlsMode.STARTTLS,
        smtp_username="mailer",
        smtp_password="s3cret",
        smtp_timeout_s=12,
    )
    relay = RelayConfig.from_settings(settings)
    assert (relay.host, relay.port, relay.tls, relay.verify_tls) == (
        "relay.example.test",
        587,
        "starttls",
        True,
    )
    assert (relay.auth, relay.username, relay.command_timeout_s, relay.connect_timeout_s) == (
        "plain",
        "mailer",
        12,
        12,
    )
    assert RelayConfig.from_settings(Settings(smtp_host="h")).auth == "none"


def test_secrets_stay_out_of_reprs_and_are_scrubbed_from_text():
    relay = RelayConfig(host="h", port=25, auth="xoauth2", username="u", oauth_token="tok3n")
    with_password = RelayConfig(host="h", port=25, username="u", password="pa55")
    for text in (repr(relay), str(relay), repr(with_password), str(with_password.model_dump())):
        assert "tok3n" not in text and "pa55" not in text
    assert scrub("server said pa55 / cGE1NQ==", with_password) == "server said ********** / **********"
    assert scrub("nothing secret", relay) == "nothing secret"


def test_tls_verification_is_on_by_default():
    from shared.mail.smtp import tls_context

    strict = tls_context(RelayConfig(host="h", port=465, tls=TlsMode.TLS))
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    relaxed = tls_context(RelayConfig(host="h", port=465, tls=TlsMode.TLS, verify_tls=False))
    assert relaxed.verify_mode == ssl.CERT_NONE and not relaxed.check_hostname


def test_describe_names_certificate_failures():
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    error.verify_message = "self-signed certificate"
    assert describe(error) == "TLS certificate verification failed: self-signed certificate"
    wrapped = aiosmtplib.SMTPConnectError("Error connecting to h on port 465: ...")
    wrapped.__cause__ = error
    assert describe(wrapped) == "TLS certificate verification failed: self-signed certificate"


# --- DATA split: pin the aiosmtplib internals (see shared/mail/smtp.py send_data) -------------

TRICKY = [
    b"Subject: dots\r\n\r\n.leading\r\n..two\r\n.\r\nno final newline",
    b"Subject: bare LF\n\nline\n.\nline\n",
    b"Subject: bare CR\r\rline\r.\rmore\r\n",
    b"Subject: mixed\r\n\r\na\r\r\nb\n\rc\r\n\r\n",
    b".",
    b"",
    "Subject: 8bit\r\n\r\nGr\u00fc\u00dfe\r\n".encode(),
    b"x" * 300_000 + b"\n.\n" + b"y" * 300_000,  # over the transport's write buffer limit
]


class ScriptedTransport(asyncio.Transport):
    """Answers 354 to DATA and 250 to the end of data; records every write."""

    def __init__(self, protocol: SMTPProtocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))
        whole = b"".join(self.written)
        if data == b"DATA\r\n":
            reply = b"354 End data with <CR><LF>.<CR><LF>\r\n"
        elif whole.endswith(b"\r\n.\r\n") and whole.startswith(b"DATA\r\n"):
            reply = b"250 2.0.0 Ok: queued\r\n"
        else:
            return
        asyncio.get_running_loop().call_soon(self.protocol.data_received, reply)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name, default=None):
        return default


def connected(loop: asyncio.AbstractEventLoop) -> tuple[SMTPProtocol, ScriptedTransport]:
    protocol = SMTPProtocol(loop=loop)
    transport = ScriptedTransport(protocol)
    protocol.connection_made(transport)
    protocol._response_pending = False  # as after reading the greeting
    return protocol, transport


@pytest.mark.parametrize("message", TRICKY, ids=range(len(TRICKY)))
async def test_send_data_writes_exactly_what_aiosmtplib_writes(message):
    loop = asyncio.get_running_loop()
    theirs, their_wire = connected(loop)
    reference = await theirs.execute_data_command(message, timeout=5)

    ours, our_wire = connected(loop)
    client = aiosmtplib.SMTP()
    client.protocol = ours
    seen_at_handover: list[bytes] = []

    async def on_handover() -> None:
        seen_at_handover.append(b"".join(our_wire.written))

    state = _Transaction()
    reply = await send_data(client, encode_data(message)[0], on_handover, 5, state)

    assert reply == reference and reply.code == 250 and state.handed_over
    assert b"".join(our_wire.written) == b"".join(their_wire.written)
    assert seen_at_handover == [b"".join(our_wire.written)[: -len(b".\r\n")]]
    assert our_wire.written[-1] == b".\r\n"


def test_encode_data_size_is_the_normalised_length_as_aiosmtplib_declares_it():
    from aiosmtplib.protocol import normalize_message_line_endings

    payload, size = encode_data(b"a\n.b\n")
    assert payload == b"a\r\n..b\r\n"
    assert size == len(normalize_message_line_endings(b"a\n.b\n")) == 7


async def test_send_data_stops_before_the_dot_when_the_connection_is_gone():
    protocol, wire = connected(asyncio.get_running_loop())
    client = aiosmtplib.SMTP()
    client.protocol = protocol

    async def hang_up() -> None:
        wire.closing = True

    state = _Transaction()
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await send_data(client, b"Subject: x\r\n\r\nbody\r\n", hang_up, 5, state)
    assert not state.handed_over and b".\r\n" not in wire.written


async def test_send_data_returns_a_refused_data_command_without_sending_the_body():
    protocol = SMTPProtocol(loop=asyncio.get_running_loop())

    class Refusing(ScriptedTransport):
        def write(self, data: bytes) -> None:
            self.written.append(data)
            asyncio.get_running_loop().call_soon(protocol.data_received, b"554 5.5.1 No valid recipients\r\n")

    wire = Refusing(protocol)
    protocol.connection_made(wire)
    client = aiosmtplib.SMTP()
    client.protocol = protocol
    state = _Transaction()
    reply = await send_data(client, b"body\r\n", None, 5, state)
    assert (reply.code, wire.written, state.handed_over) == (554, [b"DATA\r\n"], False)


def test_encode_data_fast_path_matches_aiosmtplib_on_random_messages():
    import random

    from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

    rng = random.Random(1)
    pieces = [b"a", b"bc", b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b" "]
    samples = [b"".join(rng.choices(pieces, k=rng.randint(0, 12))) for _ in range(5_000)]
    samples += [b"Subject: x\r\n\r\nplain\r\n", b"Subject: x\r\n\r\nno newline", b"\r\n", b"."]
    for message in samples:
        normalized = normalize_message_line_endings(message)
        assert encode_data(message) == (PERIOD_REGEX.sub(b"..", normalized), len(normalized)), message


@pytest.mark.parametrize(
    "address",
    [
        "a@b.c",
        "first.last+tag@sub.example-x.test",
        "o'neil@example.test",
        "x{y}|z~@example.test",
        "",
        "Name <a@example.test>",
        '"quoted local"@example.test',
        "a..b@example.test",
        ".a@example.test",
        "gr\u00fc\u00df@example.test",
    ],
)
def test_quote_matches_aiosmtplib(address):
    from aiosmtplib.email import quote_address

    from shared.mail.smtp import _quote

    assert _quote(address) == quote_address(address).encode()


@pytest.mark.parametrize("address", ["a@b.c\r\nRCPT TO:<x@y.z>", "a\x00@b.c", "a b@c.d"])
def test_quote_refuses_what_cannot_go_on_a_command_line(address):
    from shared.mail.smtp import _quote

    with pytest.raises(ValueError):
        _quote(address)
