"""``mailsvc mailing list|schedule|pause|resume|cancel|watch``: operate mailings in the database
the mass mailer uses (the running senders notice status changes within a second)."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from sqlmodel import Session, col, select

from services.mass_mailer.mailings import lifecycle, store
from services.mass_mailer.mailings.models import Mailing
from shared.db import session_scope
from shared.settings import get_settings

PENDING = ("queued", "sending", "handed_over", "deferred")
DELIVERED = ("sent", "opened", "unsubscribed", "complained")


def _url() -> str:
    return get_settings().service_database_url("mass_mailer")


def _run(work: Any, *args: Any) -> Any:
    try:
        with session_scope(_url()) as session:
            return work(session, *args)
    except lifecycle.Refused as exc:
        typer.echo(f"error: {exc.reason}", err=True)
        raise typer.Exit(1) from exc


def summary(progress: dict[str, int]) -> dict[str, int]:
    """sent / deferred / failed / remaining from the per-status counts."""
    return {
        "sent": sum(progress.get(s, 0) for s in DELIVERED),
        "deferred": progress.get("deferred", 0),
        "failed": sum(progress.get(s, 0) for s in ("failed", "bounced")),
        "remaining": sum(progress.get(s, 0) for s in PENDING),
        "total": progress.get("total", 0),
    }


def progress_line(counts: dict[str, int], rate: float, status: str, width: int = 30) -> str:
    total = max(counts["total"], 1)
    done = counts["sent"] + counts["failed"]
    filled = int(width * done / total)
    bar = "#" * filled + "-" * (width - filled)
    return (
        f"[{bar}] {100 * done / total:5.1f}% sent {counts['sent']} deferred {counts['deferred']} "
        f"failed {counts['failed']} remaining {counts['remaining']} {rate:7.1f}/s {status}"
    )


def register(app: typer.Typer) -> None:
    """Add ``mailing ...`` to ``app``."""
    mailing_app = typer.Typer(
        help="Mass mailings: list, schedule, pause, resume, cancel, watch.", no_args_is_help=True
    )
    app.add_typer(mailing_app, name="mailing")

    @mailing_app.command("list")
    def list_mailings(
        status: Annotated[str | None, typer.Option(help="Only mailings with this status")] = None,
        limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    ) -> None:
        """Mailings, newest first, with their progress."""

        def work(session: Session) -> list[tuple[Mailing, dict[str, int]]]:
            query = select(Mailing).order_by(col(Mailing.id).desc()).limit(limit)
            if status:
                query = query.where(Mailing.status == status)
            return [(m, summary(store.progress(session, m.id or 0))) for m in session.exec(query).all()]

        rows = _run(work)
        typer.echo(
            f"{'id':>6}  {'status':<10} {'scheduled (UTC)':<19} {'sent':>7} {'failed':>7} {'left':>7}  name"
        )
        for mailing, counts in rows:
            when = mailing.scheduled_at.strftime("%Y-%m-%d %H:%M:%S") if mailing.scheduled_at else "-"
            typer.echo(
                f"{mailing.id:>6}  {mailing.status:<10} {when:<19} {counts['sent']:>7} {counts['failed']:>7} "
                f"{counts['remaining']:>7}  {mailing.name}"
            )

    @mailing_app.command("schedule")
    def schedule(
        mailing_id: int,
        at: Annotated[
            datetime | None,
            typer.Option(help="Send time (ISO 8601, UTC unless an offset is given); default: now"),
        ] = None,
    ) -> None:
        """Schedule a draft (it becomes read-only)."""
        when = at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at
        mailing = _run(lifecycle.schedule, mailing_id, when)
        typer.echo(f"mailing {mailing.id} scheduled for {mailing.scheduled_at.isoformat()}")

    for action, verb in (("pause", "paused"), ("resume", "resumed"), ("cancel", "cancelled")):

        def command(mailing_id: int, _action: str = action, _verb: str = verb) -> None:
            _run(getattr(lifecycle, _action), mailing_id)
            typer.echo(f"mailing {mailing_id} {_verb}")

        command.__doc__ = f"{action.capitalize()} a mailing."
        mailing_app.command(action)(command)

    @mailing_app.command("watch")
    def watch(
        mailing_id: int,
        interval: Annotated[float, typer.Option(min=0.1, help="Seconds between updates")] = 1.0,
    ) -> None:
        """Live progress (sent / deferred / failed / remaining, rate) until the mailing ends."""
        last: tuple[float, int] | None = None
        rate = 0.0
        tty = sys.stdout.isatty()
        while True:

            def work(session: Session) -> tuple[str, dict[str, int]]:
                return lifecycle.get(session, mailing_id).status, store.progress(session, mailing_id)

            status, progress = _run(work)
            counts = summary(progress)
            moment = time.monotonic()
            if last is not None and moment > last[0]:
                rate = (counts["sent"] - last[1]) / (moment - last[0])
            last = (moment, counts["sent"])
            line = progress_line(counts, rate, status)
            typer.echo(f"\r{line}" if tty else line, nl=not tty)
            if status in ("completed", "cancelled"):
                if tty:
                    typer.echo("")
                return
            time.sleep(interval)
