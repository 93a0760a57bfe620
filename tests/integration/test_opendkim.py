"""Our DKIM signatures checked by an independent verifier: Debian's opendkim-testmsg (libopendkim).

opendkim-testmsg looks the selector up in DNS, so every check runs in a private network and mount
namespace (``unshare -m -n``): loopback up, /etc/resolv.conf bind-mounted to ``nameserver
127.0.0.1`` and a dnslib server on 127.0.0.1:53 serving the test records. Nothing touches the host
network or its resolv.conf. Run as a script, this file is that helper (``main`` below); it needs
only the standard library and dnslib, so it runs in the namespace without the project on the path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer

TESTMSG = shutil.which("opendkim-testmsg") or "/usr/sbin/opendkim-testmsg"
DOMAIN = "example.com"


# --- the helper, run inside the namespace -----------------------------------------------------


class _Records(BaseResolver):
    def __init__(self, records: dict[str, str]) -> None:
        self.records = {name.rstrip(".").lower(): value.encode() for name, value in records.items()}

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        value = self.records.get(name)
        if value is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.TXT:
            # A TXT character-string holds at most 255 bytes; an RSA-2048 record needs two.
            chunks = [value[i : i + 255] for i in range(0, len(value), 255)]
            reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(chunks), ttl=60))
        return reply


def main(spec_path: str) -> None:
    """Serve the spec's DNS records, run opendkim-testmsg on each message, print JSON results."""
    spec = json.loads(Path(spec_path).read_text())
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".resolv.conf", delete=False) as resolv:
        resolv.write("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
    subprocess.run(["mount", "--bind", resolv.name, os.path.realpath("/etc/resolv.conf")], check=True)
    resolver = _Records(spec["records"])
    logger = DNSLogger(prefix=False, logf=lambda line: print(line, file=sys.stderr))  # stdout is ours
    servers = [
        DNSServer(resolver, address="127.0.0.1", port=53, tcp=tcp, logger=logger) for tcp in (False, True)
    ]
    for server in servers:
        server.start_thread()
    results = []
    try:
        for message in spec["messages"]:
            with open(message, "rb") as stdin:
                done = subprocess.run(
                    [spec["testmsg"]], stdin=stdin, capture_output=True, timeout=30, check=False
                )
            output = (done.stdout + done.stderr).decode(errors="replace")
            results.append({"rc": done.returncode, "output": output})
    finally:
        for server in servers:
            server.stop()
        os.unlink(resolv.name)
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])


# --- the tests ----------------------------------------------------------------------------------


def verify_all(tmp_path: Path, records: dict[str, str], messages: dict[str, bytes]) -> dict[str, dict]:
    """opendkim-testmsg's {"rc", "output"} for every message, in one namespace."""
    paths = {}
    for name, raw in messages.items():
        paths[name] = tmp_path / f"{name}.eml"
        paths[name].write_bytes(raw)
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps({"records": records, "messages": [str(p) for p in paths.values()], "testmsg": TESTMSG})
    )
    done = subprocess.run(
        ["unshare", "-m", "-n", "--", sys.executable, __file__, str(spec)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return dict(zip(messages, json.loads(done.stdout), strict=True))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    from shared.mail.compose import MailAddress, MailDraft, compose
    from shared.mail.dkim import DkimAlgorithm, DkimSigner, generate_key

    rsa = generate_key(DOMAIN, "rsa2026", DkimAlgorithm.RSA)
    ed = generate_key(DOMAIN, "ed2026", DkimAlgorithm.ED25519)
    records = {key.dns_name(): key.dns_value() for key in (rsa, ed)}
    draft = MailDraft(
        sender=MailAddress(email=f"news@{DOMAIN}", name="Nachrichten Ümlaut"),
        to=[MailAddress(email=f"reader{i}@example.org", name=f"Reader Number {i}") for i in range(6)],
        subject="Grüße aus Köln: a subject long enough to be folded over several header lines " * 2,
        text="Hallo,\n\nthis   is the text part with trailing spaces   \n\tand a tab.\n\n\n",
        html="<p>Hallo <b>Welt</b> — ñandú</p>\n" * 200,
        headers={
            "List-Unsubscribe": f"<https://{DOMAIN}/u/abc>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    raw = compose(draft, DOMAIN).as_bytes()
    signers = {"rsa": DkimSigner([rsa]), "ed25519": DkimSigner([ed]), "dual": DkimSigner([rsa, ed])}
    now = int(time.time())
    messages = {}
    for name, signer in signers.items():
        signed = signer.sign(raw, timestamp=now)
        messages[name] = signed
        messages[f"{name}-tampered-body"] = signed.replace(b"Hallo", b"Hullo", 1)
        messages[f"{name}-tampered-subject"] = signed.replace(b"\r\nSubject: ", b"\r\nSubject: Re: ", 1)
        assert signed != messages[f"{name}-tampered-body"] and signed != messages[f"{name}-tampered-subject"]
    # opendkim passes a message if any signature verifies: check each half of the dual one alone.
    rsa_header = signers["rsa"].signature_headers(raw, timestamp=now)
    assert messages["dual"].startswith(rsa_header)
    messages["dual-ed25519-half"] = messages["dual"].removeprefix(rsa_header)
    messages["dual-rsa-half"] = rsa_header + raw
    # libopendkim refuses a message without a Date header as a syntax error.
    date = b"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n"
    messages["empty-body"] = signers["dual"].sign(b"From: a@example.com\r\n" + date + b"\r\n")
    messages["8bit-folded-trailing-lines"] = signers["dual"].sign(
        b"From: =?utf-8?q?J=C3=B6rg?= <j@example.com>\r\n"
        + date
        + "Subject:  Grüße,\r\n\t  ñandú  \r\n".encode()
        + b"To: "
        + b",\r\n ".join(b"r%d@example.org" % i for i in range(30))
        + b"\r\n"
        + "\r\nZeile mit   Leerzeichen \t \r\n\r\nÄ\r\n\r\n\r\n".encode()
    )
    return verify_all(tmp_path_factory.mktemp("opendkim"), records, messages)


PASSING = [
    "rsa",
    "ed25519",
    "dual",
    "dual-rsa-half",
    "dual-ed25519-half",
    "empty-body",
    "8bit-folded-trailing-lines",
]


@pytest.mark.parametrize("name", PASSING)
def test_opendkim_accepts_our_signature(results, name):
    assert results[name]["rc"] == 0, results[name]["output"]


@pytest.mark.parametrize("kind", ["rsa", "ed25519", "dual"])
@pytest.mark.parametrize("tamper", ["body", "subject"])
def test_opendkim_rejects_a_tampered_message(results, kind, tamper):
    result = results[f"{kind}-tampered-{tamper}"]
    assert result["rc"] != 0
    assert "Bad signature" in result["output"], result["output"]
