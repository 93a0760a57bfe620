"""``mailsvc mailing ...`` against a migrated database (no broker needed)."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from services.mass_mailer.mailing_cli import progress_line, register, summary
from services.mass_mailer.mailings.models import Delivery, Mailing
from shared.db import migrate, session_scope
from shared.settings import get_settings


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        pass

    register(app)
    return app


def test_list_pause_resume_cancel_watch(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILSVC_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    url = get_settings().service_database_url("mass_mailer")
    migrate("mass_mailer", url)
    with session_scope(url) as session:
        session.add(Mailing(id=5, name="Spring news", target_group_id="g", template_id=1, status="sending"))
        for i, status in enumerate(["sent", "sent", "deferred", "failed", "queued"]):
            session.add(Delivery(mailing_id=5, contact_id=f"c{i}", email=f"c{i}@example.org", status=status))
    runner = CliRunner()
    app = make_app()
    try:
        listed = runner.invoke(app, ["mailing", "list"])
        assert listed.exit_code == 0, listed.output
        assert "Spring news" in listed.output and "sending" in listed.output
        assert runner.invoke(app, ["mailing", "pause", "5"]).output.strip() == "mailing 5 paused"
        again = runner.invoke(app, ["mailing", "pause", "5"])
        assert again.exit_code == 1 and "cannot pause a mailing that is paused" in again.output
        assert runner.invoke(app, ["mailing", "resume", "5"]).exit_code == 0
        assert runner.invoke(app, ["mailing", "cancel", "5"]).output.strip() == "mailing 5 cancelled"
        watched = runner.invoke(app, ["mailing", "watch", "5"])
        assert watched.exit_code == 0
        assert "sent 2 deferred 0 failed 3 remaining 0" in watched.output and "cancelled" in watched.output
        assert runner.invoke(app, ["mailing", "watch", "99"]).exit_code == 1
    finally:
        get_settings.cache_clear()


def test_progress_line():
    counts = summary({"sent": 50, "opened": 10, "deferred": 5, "failed": 5, "queued": 30, "total": 100})
    assert counts == {"sent": 60, "deferred": 5, "failed": 5, "remaining": 35, "total": 100}
    line = progress_line(counts, 123.4, "sending", width=10)
    assert line.startswith("[######----]  65.0% sent 60 deferred 5 failed 5 remaining 35   123.4/s sending")
