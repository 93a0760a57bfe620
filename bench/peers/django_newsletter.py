"""django-newsletter as the bulk peer (unsigned, and DKIM-signed through django-dkim).

A generated Django project (SQLite, private directory) with one newsletter, N subscriptions
and one prepared submission; ``submit_newsletter`` then renders and sends one message per
subscriber (a new SMTP connection each, as django-newsletter does) to the sink. The database
with the subscribers is built once per N and copied for every run.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

from bench.peers import workload
from bench.peers.djangoproj import run_script, write_files
from bench.peers.venv import PeerEnv, PeerEnvError
from tests.servers.smtp import PostfixSmtpSink

PEER = PeerEnv(
    "django-newsletter",
    "1.2.1",
    (
        "django-newsletter==1.2.1",
        "Django==5.2.19",
        "sorl-thumbnail==13.4.0",
        "django-dkim==0.1.3",
        "dkimpy==1.1.8",
    ),
)
SLUG = "bench"

SETTINGS = """\
import os
from pathlib import Path

BASE = Path(os.environ["BENCH_DIR"])
SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages", "django.contrib.sites",
    "sorl.thumbnail", "newsletter",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [Path(__file__).parent / "templates"],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.contrib.auth.context_processors.auth",
                                       "django.contrib.messages.context_processors.messages",
                                       "django.template.context_processors.request"]},
}]
ROOT_URLCONF = "benchurls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE / "db.sqlite3"}}
SITE_ID = 1
USE_TZ = True
NEWSLETTER_THUMBNAIL = "sorl-thumbnail"
DEFAULT_FROM_EMAIL = "news@bench.example.test"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = int(os.environ.get("BENCH_SMTP_PORT", "25"))
if os.environ.get("BENCH_DKIM") == "1":
    EMAIL_BACKEND = "django_dkim.backends.smtp.EmailBackend"
    DKIM_SELECTOR = "bench"
    DKIM_DOMAIN = "bench.example.test"
    DKIM_PRIVATE_KEY = Path(os.environ["BENCH_DKIM_KEY"]).read_text()
else:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "handlers": {"console": {"class": "logging.StreamHandler"}},
           "loggers": {"newsletter": {"handlers": ["console"], "level": "WARNING"}}}
"""

URLS = """\
from django.urls import include, path

urlpatterns = [path("newsletter/", include("newsletter.urls"))]
"""

SETUP = """\
import json, os, sys
from datetime import timedelta
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsettings")
import django
django.setup()
from django.core.management import call_command
from django.contrib.sites.models import Site
from django.utils.timezone import now
from newsletter.models import Article, Message, Newsletter, Submission, Subscription

call_command("migrate", verbosity=0, interactive=False)
Site.objects.update_or_create(id=1, defaults={"domain": "bench.example.test", "name": "bench"})
spec = json.loads(open("workload.json").read())
newsletter = Newsletter.objects.create(
    title="Bench", slug=spec["slug"], email=spec["sender"], sender="Bench newsletter", send_html=False,
)
newsletter.site.set([Site.objects.get(id=1)])
Subscription.objects.bulk_create(
    [Subscription(newsletter=newsletter, name_field=name, email_field=email, subscribed=True,
                  subscribe_date=now()) for name, email in spec["recipients"]],
    batch_size=1000,
)
message = Message.objects.create(title=spec["subject"], slug="bench-message", newsletter=newsletter)
Article.objects.create(post=message, title="", text=spec["body"], sortorder=10)
submission = Submission.from_message(message)
submission.prepared = True
submission.publish_date = now() - timedelta(minutes=5)
submission.save()
print("BENCH-JSON " + json.dumps({"subscriptions": submission.subscriptions.count()}))
"""

SUBMIT = """\
import json, os, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsettings")
import django
django.setup()
from django.core.management import call_command

start = time.time()
call_command("submit_newsletter", verbosity=0)
print("BENCH-JSON " + json.dumps({"start": start, "end": time.time()}))
"""


def templates() -> dict[str, str]:
    greeting, _, footer = workload.bulk_template("django")
    text = (
        "{% autoescape off %}"
        + greeting
        + "{% for article in message.articles.all %}{{ article.text }}{% endfor %}"
        + footer
        + "{% endautoescape %}"
    )
    return {
        f"templates/newsletter/message/{SLUG}/message.txt": text,
        f"templates/newsletter/message/{SLUG}/message_subject.txt": "{{ message.title }}",
    }


@dataclasses.dataclass(frozen=True)
class BulkResult:
    recipients: int
    signed: bool
    seconds: float
    msgs_per_s: float
    install_s: float
    setup_s: float  # building the cached database with the subscribers (0 when cached)


def _project(root: Path) -> None:
    write_files(
        root,
        {
            "benchsettings.py": SETTINGS,
            "benchurls.py": URLS,
            "setup_db.py": SETUP,
            "submit.py": SUBMIT,
            **templates(),
        },
    )


def subscribers_db(count: int, log: Path) -> tuple[Path, float]:
    """The cached database with ``count`` subscriptions and one prepared submission."""
    state = PEER.path / "state" / f"subscribers-{count}"
    if (state / "done").exists():
        return state / "db.sqlite3", 0.0
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    _project(state)
    spec = {
        "slug": SLUG,
        "sender": workload.BULK_SENDER,
        "subject": workload.BULK_SUBJECT,
        "body": workload.bulk_body(),
        "recipients": list(workload.recipients(count)),
    }
    (state / "workload.json").write_text(json.dumps(spec))
    start = time.monotonic()
    out = run_script(PEER, state, "setup_db.py", log=log, extra_env={"BENCH_DIR": str(state)})
    if out.get("subscriptions") != count:
        raise PeerEnvError(
            f"django-newsletter setup made {out.get('subscriptions')} of {count} subscriptions"
        )
    seconds = time.monotonic() - start
    (state / "done").write_text(f"{seconds:.1f}\n")
    return state / "db.sqlite3", seconds


def run_bulk(
    count: int, sink: PostfixSmtpSink, work: Path, *, dkim_key: Path | None = None, timeout: float = 3600.0
) -> BulkResult:
    """Send the prepared submission to ``count`` subscribers; DKIM-sign with ``dkim_key`` (PEM)."""
    work.mkdir(parents=True, exist_ok=True)
    log = work / "django-newsletter.log"
    install_s = PEER.ensure()
    pristine, setup_s = subscribers_db(count, log)
    run_dir = Path(tempfile.mkdtemp(prefix="newsletter-run-", dir=work))
    _project(run_dir)
    shutil.copy2(pristine, run_dir / "db.sqlite3")
    env = {"BENCH_DIR": str(run_dir), "BENCH_SMTP_PORT": str(sink.port)}
    if dkim_key is not None:
        env |= {"BENCH_DKIM": "1", "BENCH_DKIM_KEY": str(dkim_key)}
    before = sink.received()
    out = run_script(PEER, run_dir, "submit.py", log=log, extra_env=env, timeout=timeout)
    deadline = time.monotonic() + 30
    while (got := sink.received() - before) < count:
        if time.monotonic() > deadline:
            raise PeerEnvError(
                f"django-newsletter: only {got} of {count} messages reached the sink; see {log}"
            )
        time.sleep(0.05)
    done = time.time()
    seconds = done - float(out["start"])  # type: ignore[arg-type]
    return BulkResult(count, dkim_key is not None, seconds, count / seconds, install_s, setup_s)
