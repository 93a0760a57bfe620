"""A private Dovecot 2.3 (IMAP + LMTP) on 127.0.0.1 in a short temp dir.

with DovecotServer() as dv:        # users alice/alicepw, bob/bobpw
    IMAPClient(dv.host, port=dv.imap_port, ssl=False).login("alice", "alicepw")
"""

from __future__ import annotations

import os
import pwd
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from tests.servers.procs import Server, ServerError, free_port, read_greeting, spawn, stop, wait_until
from tests.servers.tls import self_signed_cert

DEFAULT_USERS = {"alice": "alicepw", "bob": "bobpw"}
MAIL_USER = "nobody"  # owner of the mailboxes: Dovecot refuses uid 0

CONF = """\
instance_name = dovecot-test-{port}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
hostname = mail.example.test
postmaster_address = postmaster@example.test
disable_plaintext_auth = no
auth_mechanisms = plain login{oauth_mechanisms}
auth_username_format = %Ln
{ssl}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/passwd{passwd_mechanisms}
}}
{oauth_passdb}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%u
}}
mail_location = maildir:~/Maildir
mail_fsync = never
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
{imaps}}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
"""


class DovecotServer(Server):
    """Dovecot with passwd-file users, maildirs owned by ``nobody``, plain IMAP by default.

    ``ssl=True``: STARTTLS on ``imap_port`` plus implicit TLS on ``imaps_port``, with a
    self-signed certificate at ``cert_path`` (SAN IP:127.0.0.1) for clients to trust.
    ``oauth2_introspection_url``: XOAUTH2/OAUTHBEARER logins, checked against that RFC 7662
    introspection endpoint (it must answer {"active": true, "username": ...}); passwords then
    only serve PLAIN/LOGIN, so fill such a server over IMAP (APPEND), not LMTP.
    stop() keeps the mailboxes, start() again reuses them; close() deletes everything.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        ssl: bool = False,
        oauth2_introspection_url: str | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.ssl = ssl
        self.oauth2_introspection_url = oauth2_introspection_url
        self.start_timeout = start_timeout
        # Short path: unix sockets live in run/ (108-byte limit; pytest's tmp_path is too long).
        self.dir = Path(tempfile.mkdtemp(prefix="dv-", dir="/tmp"))
        self.imap_port, self.lmtp_port = free_port(), free_port()
        self.imaps_port: int | None = free_port() if ssl else None
        self.cert_path: Path | None = None
        self.log_path = self.dir / "dovecot.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._configure()

    def _configure(self) -> None:
        d = self.dir
        d.chmod(0o755)
        for sub in ("run", "state", "mail"):
            (d / sub).mkdir()
        pw = pwd.getpwnam(MAIL_USER)
        if os.geteuid() == 0:
            os.chown(d / "mail", pw.pw_uid, pw.pw_gid)
        (d / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}:::\n" for u, p in self.users.items()))
        ssl, imaps = "ssl = no", ""
        if self.ssl:
            self.cert_path, key_path = self_signed_cert(d)
            ssl = f"ssl = yes\nssl_cert = <{self.cert_path}\nssl_key = <{key_path}"
            imaps = (
                f"  inet_listener imaps {{\n    address = 127.0.0.1\n"
                f"    port = {self.imaps_port}\n    ssl = yes\n  }}\n"
            )
        oauth_mechanisms, oauth_passdb, passwd_mechanisms = "", "", ""
        if self.oauth2_introspection_url:
            # XOAUTH2/OAUTHBEARER: Dovecot asks the introspection endpoint (RFC 7662) about the token.
            (d / "oauth2.conf.ext").write_text(
                f"introspection_mode = post\nintrospection_url = {self.oauth2_introspection_url}\n"
                "username_attribute = username\nactive_attribute = active\nactive_value = true\n"
                "force_introspection = yes\n"
            )
            oauth_mechanisms = " xoauth2 oauthbearer"
            passwd_mechanisms = "\n  mechanisms = plain login"
            oauth_passdb = (
                f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                f"  args = {d}/oauth2.conf.ext\n}}\n"
            )
        (d / "dovecot.conf").write_text(
            CONF.format(
                oauth_mechanisms=oauth_mechanisms,
                oauth_passdb=oauth_passdb,
                passwd_mechanisms=passwd_mechanisms,
                d=d,
                uid=pw.pw_uid,
                gid=pw.pw_gid,
                port=self.imap_port,
                lmtp_port=self.lmtp_port,
                ssl=ssl,
                imaps=imaps,
            )
        )

    def start(self) -> None:
        if self._proc is not None:
            return
        dovecot = shutil.which("dovecot") or "/usr/sbin/dovecot"
        t0 = time.monotonic()
        argv = [dovecot, "-F", "-c", str(self.dir / "dovecot.conf")]
        self._proc = spawn(argv, log_path=self.dir / "stdout.log", cwd=self.dir)
        try:
            wait_until(
                lambda: (
                    read_greeting(self.host, self.imap_port, b"* OK")
                    and read_greeting(self.host, self.lmtp_port, b"220")
                ),
                what=f"Dovecot on {self.host}:{self.imap_port}",
                timeout=self.start_timeout,
                proc=self._proc,
                log_path=self.log_path,
            )
        except ServerError as e:
            self.stop()
            raise ServerError(f"{e}\n--- stdout ---\n{self._stdout()}") from None
        self.startup_seconds = time.monotonic() - t0
        print(
            f"[servers] Dovecot ready on imap {self.imap_port}, lmtp {self.lmtp_port} "
            f"in {self.startup_seconds:.2f} s",
            file=sys.stderr,
        )

    def _stdout(self) -> str:
        path = self.dir / "stdout.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop(proc)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def deliver(self, rcpt: str, message: bytes, sender: str = "sender@example.test") -> None:
        """Deliver ``message`` to a user's INBOX over LMTP (``rcpt``: "alice" or an address)."""
        if "@" not in rcpt:
            rcpt = f"{rcpt}@example.test"
        with smtplib.LMTP(self.host, self.lmtp_port, timeout=10) as lmtp:
            lmtp.sendmail(sender, [rcpt], message)
