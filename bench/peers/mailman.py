"""GNU Mailman 3 core as the bulk-mail peer: one personalised post to a list of N members.

The list with N members is built once per N (``mailman addmembers`` manages ~40 members/s)
and kept in the cache as a pristine var_dir; every run copies it into a private directory,
points the outgoing SMTP at the sink, starts the runners, injects the post and counts the
sink until all N personalised copies arrived.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.peers import workload
from bench.peers.venv import PeerEnv, PeerEnvError, run
from tests.servers.procs import free_port, spawn, stop
from tests.servers.smtp import PostfixSmtpSink

PEER = PeerEnv("mailman", "3.3.10", ("mailman==3.3.10", "SQLAlchemy==2.1.9", "aiosmtpd==1.4.6"))
LIST = "bench@lists.example.test"

CONFIG = """\
[mailman]
site_owner: postmaster@lists.example.test
layout: bench

[paths.bench]
var_dir: {var}

[database]
class: mailman.database.sqlite.SQLiteDatabase
url: sqlite:///$DATA_DIR/mailman.db

[mta]
incoming: mailman.mta.null.NullMTA
outgoing: mailman.mta.deliver.deliver
smtp_host: 127.0.0.1
smtp_port: {smtp_port}
lmtp_host: 127.0.0.1
lmtp_port: {lmtp_port}

[webservice]
hostname: 127.0.0.1
port: {rest_port}

[runner.rest]
start: no

[runner.lmtp]
start: no

[archiver.prototype]
enable: no

[archiver.mhonarc]
enable: no

[archiver.mail_archive]
enable: no
"""

# Run inside ``mailman shell -l LIST -r benchsetup.configure`` (PYTHONPATH = the run dir).
SETUP_MODULE = """\
def configure(mlist):
    from mailman.config import config
    from mailman.interfaces.action import Action
    from mailman.interfaces.archiver import ArchivePolicy
    from mailman.interfaces.mailinglist import DMARCMitigateAction, Personalization

    mlist.personalize = Personalization.full
    mlist.default_nonmember_action = Action.accept
    mlist.default_member_action = Action.accept
    mlist.send_welcome_message = False
    mlist.send_goodbye_message = False
    mlist.max_message_size = 0
    mlist.max_num_recipients = 0
    mlist.require_explicit_destination = False
    mlist.administrivia = False
    mlist.dmarc_mitigate_action = DMARCMitigateAction.no_mitigation
    mlist.archive_policy = ArchivePolicy.never
    mlist.digests_enabled = False
    config.db.commit()
"""


@dataclasses.dataclass(frozen=True)
class BulkResult:
    recipients: int
    seconds: float
    msgs_per_s: float
    install_s: float
    members_add_s: float  # 0 when the member list came from the cache
    inject_s: float


def _config(var: Path, smtp_port: int) -> str:
    return CONFIG.format(var=var, smtp_port=smtp_port, lmtp_port=free_port(), rest_port=free_port())


def _mailman(cfg: Path, *args: str) -> list[str]:
    root = ["--run-as-root"] if os.geteuid() == 0 else []
    return [str(PEER.bin("mailman")), "-C", str(cfg), *root, *args]


def _templates(var: Path) -> None:
    greeting, _, footer = workload.bulk_template("mailman")
    site = var / "templates" / "site" / "en"
    site.mkdir(parents=True, exist_ok=True)
    (site / "list:member:regular:header.txt").write_text(greeting)
    (site / "list:member:regular:footer.txt").write_text(footer)


def members_var(count: int, log: Path) -> tuple[Path, float]:
    """The cached pristine var_dir with a list of ``count`` members; (path, seconds spent)."""
    state = PEER.path / "state" / f"members-{count}"
    var = state / "var"
    if (state / "done").exists():
        return var, 0.0
    shutil.rmtree(state, ignore_errors=True)
    var.mkdir(parents=True)
    cfg = state / "mailman.cfg"
    cfg.write_text(_config(var, free_port()))
    (state / "benchsetup.py").write_text(SETUP_MODULE)
    env = PEER.env({"PYTHONPATH": str(state)})
    start = time.monotonic()
    run(_mailman(cfg, "create", "-N", LIST), env=env, log=log, what="mailman create")
    run(_mailman(cfg, "shell", "-l", LIST, "-r", "benchsetup.configure"), env=env, log=log, what="list setup")
    members = state / "members.txt"
    members.write_text("".join(f"{name} <{addr}>\n" for name, addr in workload.recipients(count)))
    run(_mailman(cfg, "addmembers", "-W", str(members), LIST), env=env, log=log, what="mailman addmembers")
    seconds = time.monotonic() - start
    (state / "done").write_text(f"{seconds:.1f}\n")
    return var, seconds


RUNNERS = 10  # archive bounces command digest in out pipeline retry task virgin (no rest, lmtp)


def _wait_runners(log: Path, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    """Until every runner logged its start ("runner started" in mailman.log)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerEnvError(f"Mailman master exited with {proc.returncode}:\n{text[-2000:]}")
        text = log.read_text(errors="replace") if log.exists() else ""
        if text.count("runner started") >= RUNNERS:
            return
        time.sleep(0.2)
    raise PeerEnvError(f"Mailman runners not up after {timeout:.0f} s:\n{text[-2000:]}")


def run_bulk(count: int, sink: PostfixSmtpSink, work: Path, *, timeout: float = 3600.0) -> BulkResult:
    """Install (cached), build the list (cached), then time one personalised post to ``count``."""
    work.mkdir(parents=True, exist_ok=True)
    log = work / "mailman.log"
    install_s = PEER.ensure()
    pristine, add_s = members_var(count, log)
    run_dir = Path(tempfile.mkdtemp(prefix="mailman-run-", dir=work))
    var = run_dir / "var"
    shutil.copytree(pristine, var)
    for sub in ("queue", "logs", "locks"):
        shutil.rmtree(var / sub, ignore_errors=True)
    _templates(var)
    cfg = run_dir / "mailman.cfg"
    cfg.write_text(_config(var, sink.port))
    post = run_dir / "post.eml"
    post.write_bytes(workload.bulk_post(LIST))
    env = PEER.env()
    master_argv = [str(PEER.bin("master")), "-C", str(cfg), "--force"]
    proc = spawn(master_argv, log_path=run_dir / "master.out", cwd=run_dir, env=env)
    try:
        _wait_runners(var / "logs" / "mailman.log", proc)
        before = sink.received()
        t0 = time.monotonic()
        run(_mailman(cfg, "inject", "-f", str(post), LIST), env=env, log=log, what="mailman inject")
        injected = time.monotonic()
        # The clock starts when the post is in Mailman's queue (inject's own start-up is not counted).
        deadline = injected + timeout
        last, last_change = 0, injected
        while (got := sink.received() - before) < count:
            now = time.monotonic()
            if got != last:
                last, last_change = got, now
            if proc.poll() is not None:
                raise PeerEnvError(f"Mailman master exited with {proc.returncode}; {got} of {count} sent")
            if now > deadline or now - last_change > 120:
                raise PeerEnvError(f"Mailman: only {got} of {count} messages reached the sink")
            time.sleep(0.05)
        done = time.monotonic()
    finally:
        stop(proc)
    seconds = done - injected
    return BulkResult(count, seconds, count / seconds, install_s, add_s, injected - t0)
