"""django-helpdesk as the inbox-import peer: ``get_email`` from a Dovecot IMAP folder.

A generated Django project (SQLite, private directory per run) with one queue reading the
folder over IMAP; the import is timed inside the peer's process (Django start-up excluded),
then every follow-up is checked: did it become a comment on its original's ticket?
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

from imapclient import DELETED, IMAPClient

from bench.peers.djangoproj import run_script, write_files
from bench.peers.venv import PeerEnv, PeerEnvError
from bench.peers.workload import FOLLOWUP_KINDS, QUEUE_ADDRESS, InboxWorkload

PEER = PeerEnv(
    "django-helpdesk", "2.6.1", ("django-helpdesk==2.6.1", "Django==5.2.19", "djangorestframework==3.18.3")
)
SLUG = "bench"


def tag(ticket: int) -> str:
    """django-helpdesk's ticket tag in subjects (``[queue-slug-N]``)."""
    return f"[{SLUG}-{ticket}]"


SETTINGS = """\
import os
from pathlib import Path

BASE = Path(os.environ["BENCH_DIR"])
SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles",
    "django.contrib.sites", "django.contrib.humanize", "rest_framework", "helpdesk",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.contrib.auth.context_processors.auth",
                                       "django.contrib.messages.context_processors.messages",
                                       "django.template.context_processors.request"]},
}]
ROOT_URLCONF = "benchurls"
# The peer's best case: no fsync per commit (measured 23-66 msg/s with defaults, 70-93 without).
DATABASES = {"default": {
    "ENGINE": "django.db.backends.sqlite3", "NAME": BASE / "db.sqlite3",
    "OPTIONS": {"init_command": "PRAGMA synchronous=OFF; PRAGMA journal_mode=WAL;"},
}}
SITE_ID = 1
USE_TZ = True
STATIC_URL = "/static/"
MEDIA_ROOT = BASE / "media"
HELPDESK_TEAMS_MODE_ENABLED = False
# Acknowledgements are rendered but not sent anywhere (the peer's best case, nothing leaves).
EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"
DEFAULT_FROM_EMAIL = "support@helpdesk.example.test"
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "handlers": {"console": {"class": "logging.StreamHandler", "level": "WARNING"}},
           "root": {"handlers": ["console"], "level": "WARNING"}}
"""

URLS = """\
from django.urls import include, path

urlpatterns = [path("helpdesk/", include("helpdesk.urls", namespace="helpdesk"))]
"""

SETUP = """\
import json, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsettings")
import django
django.setup()
from django.core.management import call_command
from django.contrib.sites.models import Site
from helpdesk.models import Queue

call_command("migrate", verbosity=0, interactive=False)
Site.objects.update_or_create(id=1, defaults={"domain": "helpdesk.example.test", "name": "bench"})
box = json.loads(open("mailbox.json").read())
Queue.objects.create(
    title="Bench", slug=box["slug"], email_address=box["address"], allow_email_submission=True,
    email_box_type="imap", email_box_host=box["host"], email_box_port=box["port"], email_box_ssl=False,
    email_box_user=box["user"], email_box_pass=box["password"], email_box_imap_folder=box["folder"],
    email_box_interval=0, logging_type="info",
)
print("BENCH-JSON {}")
"""

IMPORT = """\
import json, logging, os, re, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsettings")
import django
django.setup()
from django.core.management import call_command
from helpdesk.models import FollowUp, Ticket


class Watch(logging.Handler):
    # get_email gives up on the whole queue when one message raises: remember which one.
    current = None
    failed_at = None

    def emit(self, record):
        text = record.getMessage()
        found = re.match(r"Processing message b'([0-9]+)'", text)
        if found:
            Watch.current = int(found.group(1))
        elif text.startswith("Queue processing failed"):
            Watch.failed_at = Watch.current


logging.getLogger("django.helpdesk.queue.bench").addHandler(Watch(logging.INFO))
start = time.time()
call_command("get_email")
end = time.time()
token = re.compile(r"bench-token: ([OF][0-9]+)")
tickets_of = {}
for ticket_id, comment in FollowUp.objects.values_list("ticket_id", "comment"):
    for found in token.findall(comment or ""):
        tickets_of.setdefault(found, ticket_id)
print("BENCH-JSON " + json.dumps({
    "start": start, "end": end, "tickets": Ticket.objects.count(),
    "followups": FollowUp.objects.count(), "ticket_of_token": tickets_of, "failed_at": Watch.failed_at,
}))
"""


@dataclasses.dataclass(frozen=True)
class ImportResult:
    messages: int
    seconds: float
    msgs_per_s: float
    tickets: int
    followup_records: int
    followups_total: int
    followups_ok: dict[str, int]  # per FOLLOWUP_KINDS: landed on the right ticket
    followups: dict[str, int]  # per FOLLOWUP_KINDS: how many there were
    originals_found: int
    poison_messages: int  # mails that made get_email give up on the queue (removed, then rerun)
    install_s: float
    setup_s: float


MAX_RUNS = 50


def drop_message(imap: tuple[str, int, str, str, str], sequence: int) -> None:
    """Delete message ``sequence`` (and expunge what get_email already flagged \\Deleted)."""
    host, port, user, password, folder = imap
    with IMAPClient(host, port=port, ssl=False, timeout=30, use_uid=False) as client:
        client.login(user, password)
        client.select_folder(folder)
        client.add_flags([sequence], [DELETED], silent=True)  # seq numbers: no expunge since
        client.expunge()


def check_followups(wl: InboxWorkload, ticket_of_token: dict[str, int]) -> dict[str, int]:
    """Counts of follow-ups that landed on their original's ticket, per kind."""
    counts = {kind: 0 for kind in FOLLOWUP_KINDS} | {f"{kind}_ok": 0 for kind in FOLLOWUP_KINDS}
    for f in wl.followups:
        counts[f.kind] += 1
        expected = ticket_of_token.get(wl.originals[f.original])
        if expected is not None and ticket_of_token.get(f.token) == expected:
            counts[f"{f.kind}_ok"] += 1
    return counts


def run_import(
    wl: InboxWorkload, imap: tuple[str, int, str, str, str], work: Path, *, timeout: float = 3600.0
) -> ImportResult:
    """Import the (already filled) IMAP folder ``imap`` = (host, port, user, password, folder)."""
    work.mkdir(parents=True, exist_ok=True)
    log = work / "django-helpdesk.log"
    install_s = PEER.ensure()
    run_dir = Path(tempfile.mkdtemp(prefix="helpdesk-run-", dir=work))
    write_files(
        run_dir,
        {"benchsettings.py": SETTINGS, "benchurls.py": URLS, "setup_db.py": SETUP, "import_mail.py": IMPORT},
    )
    host, port, user, password, folder = imap
    box = {
        "slug": SLUG,
        "address": QUEUE_ADDRESS,
        "host": host,
        "port": port,
        "user": user,
        "password": password,
        "folder": folder,
    }
    (run_dir / "mailbox.json").write_text(json.dumps(box))
    env = {"BENCH_DIR": str(run_dir)}
    t0 = time.monotonic()
    run_script(PEER, run_dir, "setup_db.py", log=log, extra_env=env)
    setup_s = time.monotonic() - t0
    (run_dir / "mailbox.json").unlink()  # holds the IMAP password
    seconds, poison = 0.0, 0
    for _ in range(MAX_RUNS):
        out = run_script(PEER, run_dir, "import_mail.py", log=log, extra_env=env, timeout=timeout)
        seconds += float(out["end"]) - float(out["start"])  # type: ignore[arg-type]
        if out.get("failed_at") is None:
            break
        # As an admin would: take the message that stops every import out of the folder, rerun.
        drop_message(imap, int(out["failed_at"]))  # type: ignore[call-overload]
        poison += 1
    else:
        raise PeerEnvError(f"django-helpdesk still aborting after {MAX_RUNS} runs; see {log}")
    tokens = {str(k): int(v) for k, v in dict(out["ticket_of_token"]).items()}  # type: ignore[call-overload]
    counts = check_followups(wl, tokens)
    originals = sum(1 for t in wl.originals.values() if t in tokens)
    if originals == 0:
        raise PeerEnvError(f"django-helpdesk imported none of the generated mails; see {log}")
    n = len(wl.messages)
    return ImportResult(
        n,
        seconds,
        n / seconds,
        int(out["tickets"]),
        int(out["followups"]),  # type: ignore[arg-type]
        len(wl.followups),
        {k: counts[f"{k}_ok"] for k in FOLLOWUP_KINDS},
        {k: counts[k] for k in FOLLOWUP_KINDS},
        originals,
        poison,
        install_s,
        setup_s,
    )
