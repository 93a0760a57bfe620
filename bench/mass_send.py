"""Mass-mailing throughput: N recipients, ~20 KB personalised message, RSA-2048 DKIM, real Apache
Kafka, Postfix smtp-sink, two sender processes on this machine.

    uv run python bench/mass_send.py [--recipients N | --quick] [--processes 2]
                                     [--size 3000] [--no-dkim] [--json]

Contacts, a target group, the template (MJML rendered once), a DKIM key and a sender identity
are seeded straight into a SQLite database; the mass mailer processes (the real service:
scheduler, planner, bulk senders) are started with ``faststream run``; the mailing is scheduled a
few seconds ahead. Measured from the scheduled time to the last 250 reply counted by smtp-sink:
``msgs_per_s`` = N / that time; ``p99_ms`` = 99th percentile of the per-recipient latency from the
scheduled time to its recorded 250 (sent_at); ``peak_rss_mb`` = the largest peak RSS (VmHWM) of any
service process. Last line: ``RESULT msgs_per_s=... p99_ms=... peak_rss_mb=...``.

``--size 3000`` sends issue 7's comparison workload instead (bench/peers/workload.py: the same
~3 KB newsletter text and recipient list every peer gets, personalised with the recipient's
name and address; ours also carries the HTML alternative MJML renders, so our message is the
larger one). ``--no-dkim`` sends unsigned; ``--json`` ends with a JSON object instead.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert
from sqlmodel import Session, select

from bench.peers import workload
from bench.procstats import cpu_seconds, peak_rss_mb
from services.mass_mailer.audience.models import TargetGroup, TargetGroupMember
from services.mass_mailer.mailings.models import Delivery, Mailing
from services.mass_mailer.models import Contact, DkimKeyRecord, SenderIdentity
from services.mass_mailer.templates import store as template_store
from services.mass_mailer.templates.render import render_design
from shared.db import get_engine, migrate, session_scope
from shared.mail.dkim import DkimAlgorithm, generate_key
from shared.secretbox import SecretBox, generate_master_key
from shared.settings import Settings
from tests.mass_mailer.designs import one_column, text
from tests.servers.kafka import KafkaBroker
from tests.servers.procs import free_port
from tests.servers.smtp import PostfixSmtpSink

SUBJECT = 'Neuigkeiten für {{ contact.first_name | default("Kunde") }}'
PARAGRAPH = (
    "Liebe Kundin, lieber Kunde, hier sind die Neuigkeiten des Monats mit Angeboten, Terminen "
    "und Hinweisen (Grüße aus Köln). "
)


def design_20kb() -> dict:
    texts = [
        {
            "tagName": "mj-text",
            "attributes": {},
            "content": "<p>Hallo {{ contact.first_name }} "
            "{{ contact.last_name }} aus {{ contact.custom.city }},</p>",
        },
        *(
            {"tagName": "mj-text", "attributes": {"font-size": "14px"}, "content": f"<p>{PARAGRAPH * 3}</p>"}
            for _ in range(22)
        ),
        {
            "tagName": "mj-button",
            "attributes": {"href": "{{ links.online_view }}"},
            "content": "Im Browser ansehen",
        },
        {"tagName": "mj-text", "attributes": {}, "content": '<a href="{{ links.unsubscribe }}">Abmelden</a>'},
    ]
    return one_column(*texts)


def design_comparison() -> dict:
    """The peers' newsletter text (workload.bulk_template) as MJML, one paragraph per block."""
    greeting, body, footer = workload.bulk_template("plain")
    greeting = greeting.replace("{name}", "{{ contact.first_name }} {{ contact.last_name }}")
    footer = footer.replace("{email}", "{{ contact.email }}")
    blocks = [p for p in (greeting + body + footer).split("\n\n") if p.strip()]
    return one_column(*(text("<p>" + block.replace("\n", "<br>") + "</p>") for block in blocks))


def contact_rows(recipients: int, comparison: bool, moment: datetime) -> list[dict]:
    if comparison:
        people = [(name.split(" ", 1), email) for name, email in workload.recipients(recipients)]
    else:
        people = [([f"Vorname{i}", "Nachname"], f"r{i:07d}@example{i % 50}.org") for i in range(recipients)]
    return [
        {
            "contact_id": f"c{i:07d}",
            "email": email,
            "first_name": names[0],
            "last_name": names[1],
            "language": "de",
            "custom_fields": {"city": f"Stadt {i % 100}"},
            "email_opt_out": False,
            "unsubscribed": False,
            "bounced": False,
            "complained": False,
            "created_at": moment,
            "updated_at": moment,
        }
        for i, (names, email) in enumerate(people)
    ]


def seed(
    url: str,
    settings: Settings,
    recipients: int,
    sink_port: int,
    pool_size: int,
    *,
    comparison: bool = False,
    dkim: bool = True,
) -> int:
    migrate("mass_mailer", url)
    box = SecretBox.from_settings(settings)
    key = generate_key("example.com", "bench", DkimAlgorithm.RSA)
    rendered = render_design(design_comparison() if comparison else design_20kb())
    moment = datetime.now(UTC)
    rows = contact_rows(recipients, comparison, moment)
    engine = get_engine(url)
    with Session(engine) as session:
        for start in range(0, recipients, 10_000):
            stop = min(recipients, start + 10_000)
            session.execute(insert(Contact), rows[start:stop])
            session.execute(
                insert(TargetGroupMember),
                [
                    {
                        "target_group_id": "bench",
                        "contact_id": f"c{i:07d}",
                        "source": "static",
                        "added_at": moment,
                    }
                    for i in range(start, stop)
                ],
            )
        session.commit()
    with session_scope(url) as session:
        session.add(TargetGroup(id="bench", name="Bench", active=True))
        session.add(
            DkimKeyRecord(
                domain="example.com",
                selector="bench",
                algorithm="rsa",
                private_key=box.encrypt(key.private_pem),
            )
        )
        session.add(
            SenderIdentity(
                name="News",
                email="news@example.com",
                relay_host="127.0.0.1",
                relay_port=sink_port,
                relay_tls="none",
                pool_size=pool_size,
                dkim_domain="example.com" if dkim else None,
            )
        )
        subject = workload.BULK_SUBJECT if comparison else SUBJECT
        template = template_store.create_template(session, {"name": "Bench", "subject": subject}, rendered)
        version = template.current_version_id
        mailing = Mailing(
            name="bench",
            target_group_id="bench",
            template_id=template.id or 0,
            template_version_id=version,
            sender_identity="News",
        )
        session.add(mailing)
        session.flush()
        return mailing.id or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="5,000 recipients")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--pool-size", type=int, default=32, help="SMTP connections per process")
    parser.add_argument("--concurrency", type=int, default=96, help="messages in flight per process")
    parser.add_argument("--profile", help="write cProfile stats of each service process to PATH.<pid>")
    parser.add_argument(
        "--size",
        type=int,
        help=f"{workload.BULK_SIZE}: issue 7's comparison newsletter (bench/peers/workload.py)",
    )
    parser.add_argument("--no-dkim", action="store_true", help="send unsigned")
    parser.add_argument("--json", action="store_true", help="end with a JSON object instead of RESULT")
    args = parser.parse_args()
    if args.size is not None and args.size != workload.BULK_SIZE:
        parser.error(f"--size: only the comparison workload's {workload.BULK_SIZE} bytes exists")
    recipients = 5_000 if args.quick else args.recipients

    work = Path(tempfile.mkdtemp(prefix="mass-send-"))
    url = f"sqlite:///{work / 'mass_mailer.db'}"
    master = generate_master_key()
    kafka = KafkaBroker()
    sink = PostfixSmtpSink(count=True, backlog=512)
    kafka.start()
    sink.start()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        settings = Settings(master_key=master, data_dir=work)
        t0 = time.monotonic()
        mailing_id = seed(
            url,
            settings,
            recipients,
            sink.port,
            args.pool_size,
            comparison=args.size is not None,
            dkim=not args.no_dkim,
        )
        print(f"seeded {recipients} contacts in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        env = {
            **os.environ,
            "MAILSVC_DATA_DIR": str(work),
            "MAILSVC_DATABASE_URL": url,
            "MAILSVC_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "MAILSVC_KAFKA_PARTITIONS": "6",
            "MAILSVC_MASTER_KEY": master,
            "MAILSVC_MAIL_DOMAIN": "mail.example.com",
            "MAILSVC_LOG_LEVEL": "WARNING",
            "MAILSVC_MAILING_SENDER_CONCURRENCY": str(args.concurrency),
            "MAILSVC_MAILING_SCHEDULER_INTERVAL_S": "0.2",
        }
        if args.profile:
            env["MAILSVC_BENCH_PROFILE"] = args.profile
        for _ in range(args.processes):
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "faststream",
                        "run",
                        "tests.mass_mailer.engine.wiring:app",
                        "--port",
                        str(free_port()),
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=open(work / f"svc-{len(processes)}.log", "wb"),
                )
            )
        time.sleep(12)  # start-up: migrations, topics, consumer groups
        scheduled = datetime.now(UTC) + timedelta(seconds=3)
        cpu_before = sum(cpu_seconds(p.pid) for p in processes)
        with session_scope(url) as session:
            mailing = session.get(Mailing, mailing_id)
            mailing.status, mailing.scheduled_at = "scheduled", scheduled  # type: ignore[union-attr]
        wait = (scheduled - datetime.now(UTC)).total_seconds()
        time.sleep(max(0.0, wait))
        start = time.monotonic()
        last_report = start
        while (received := sink.received()) < recipients:
            if any(p.poll() is not None for p in processes):
                raise SystemExit("a service process died; see " + str(work))
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                print(f"{received} / {recipients} after {last_report - start:.0f} s", file=sys.stderr)
            if time.monotonic() - start > 3_600:
                raise SystemExit(f"timeout: {received} of {recipients}")
            time.sleep(0.02)
        elapsed = time.monotonic() - start
        peak = max(peak_rss_mb(p.pid) for p in processes)
        cpu = sum(cpu_seconds(p.pid) for p in processes) - cpu_before
        load = os.getloadavg()[0]
        time.sleep(1.5)  # let the last results be written
        with session_scope(url) as session:
            sent = [
                d
                for (d,) in session.execute(select(Delivery.sent_at).where(Delivery.mailing_id == mailing_id))
            ]
        latencies = sorted(
            ((s if s.tzinfo else s.replace(tzinfo=UTC)) - scheduled).total_seconds() * 1000 for s in sent if s
        )
        p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
        print(f"{recipients} messages in {elapsed:.1f} s; {len(latencies)} recorded sent", file=sys.stderr)
        print(
            f"service CPU {cpu:.1f} s ({recipients / max(cpu, 0.001):.0f} msgs per CPU-second); "
            f"load average {load:.1f} on {os.cpu_count()} cores",
            file=sys.stderr,
        )
        figures = {
            "msgs_per_s": round(recipients / elapsed, 1),
            "seconds": round(elapsed, 2),
            "p99_ms": round(p99),
            "peak_rss_mb": round(peak),
            "msgs_per_cpu_s": round(recipients / max(cpu, 0.001)),
            "recipients": recipients,
            "dkim": not args.no_dkim,
        }
        if args.json:
            print(json.dumps(figures))
        else:
            print(
                f"RESULT msgs_per_s={figures['msgs_per_s']:.0f} p99_ms={p99:.0f} peak_rss_mb={peak:.0f} "
                f"msgs_per_cpu_s={figures['msgs_per_cpu_s']}"
            )
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        sink.close()
        kafka.stop()


if __name__ == "__main__":
    main()
