import ssl
import time

import pytest
from imapclient import IMAPClient

from tests.servers.dovecot import DovecotServer

RAW = (
    b"From: Carol <carol@example.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: infra test\r\n"
    b"Message-ID: <%s@example.test>\r\n"
    b"\r\n"
    b"Hello Alice.\r\n"
)


def login(dovecot: DovecotServer, user: str = "alice") -> IMAPClient:
    client = IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False, timeout=10)
    client.login(user, dovecot.users[user])
    return client


def test_append_then_fetch_peek(dovecot, unique):
    folder = unique()  # no dots: "." is the Maildir++ hierarchy separator
    raw = RAW % folder.encode()
    with login(dovecot) as imap:
        imap.create_folder(folder)
        imap.append(folder, raw)
        imap.select_folder(folder)
        uids = imap.search("ALL")
        assert len(uids) == 1
        data = imap.fetch(uids, ["BODY.PEEK[]", "FLAGS"])[uids[0]]
        assert data[b"BODY[]"] == raw
        assert b"\\Seen" not in data[b"FLAGS"]


def test_lmtp_delivery_reaches_inbox(dovecot, unique):
    dovecot.deliver("bob", RAW % unique().encode())
    with login(dovecot, "bob") as imap:
        imap.select_folder("INBOX", readonly=True)
        assert imap.search(["HEADER", "Message-ID", f"<{unique()}@example.test>"])


def test_idle_sees_append(dovecot, unique):
    folder = unique()
    with login(dovecot) as watcher, login(dovecot) as writer:
        watcher.create_folder(folder)
        watcher.select_folder(folder)
        watcher.idle()
        writer.append(folder, RAW % folder.encode())
        deadline = time.monotonic() + 5  # Dovecot notifies ~0.5 s after the APPEND
        responses: list = []
        while time.monotonic() < deadline and not any(r[1] == b"EXISTS" for r in responses):
            responses += watcher.idle_check(timeout=1)
        watcher.idle_done()
        assert (1, b"EXISTS") in responses


@pytest.mark.imap
def test_ssl_variant():
    with DovecotServer(ssl=True) as dv:
        assert dv.cert_path is not None and dv.imaps_port is not None
        ctx = ssl.create_default_context(cafile=str(dv.cert_path))
        with IMAPClient(dv.host, port=dv.imaps_port, ssl=True, ssl_context=ctx) as imap:
            imap.login("bob", "bobpw")
            assert imap.select_folder("INBOX")[b"EXISTS"] == 0
        with IMAPClient(dv.host, port=dv.imap_port, ssl=False) as imap:
            imap.starttls(ctx)
            imap.login("alice", "alicepw")
