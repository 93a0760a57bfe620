"""The workloads every system gets, ours and the peers: pure functions, no I/O but the corpus.

Bulk: one ~3 KB plain-text newsletter, personalised per recipient (greeting with the name,
footer with the address). Each system states personalisation in its own template language;
``bulk_template(style)`` gives the same text with that system's placeholders, and
``render_bulk(name, email)`` is what every recipient must end up reading.

Inbox: ``inbox_workload(n, corpus_dir, tag)``: generated customer mails first (each opens a
ticket; the k-th becomes ticket k in a fresh system), then real-world corpus mails and
follow-ups, interleaved. Follow-ups reply to an earlier generated mail either with the
ticket tag in the subject (``tag(k)``, each system's own format) or with In-Reply-To/References
pointing at its Message-ID. Every generated mail carries a token (``bench-token: O12`` /
``F3``) in its body so correctness can be checked without trusting ticket numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

BULK_SIZE = 3_000  # target size of the delivered message in bytes, headers included
BULK_SUBJECT = "Bench newsletter: news of the month"
BULK_SENDER = "news@bench.example.test"
BULK_DOMAIN = "bench.example.test"
NAMES = ("Ada", "Bernd", "Chiara", "Dmitri", "Elif", "Farah", "Goran", "Hana", "Ingrid", "Jonas")

# {name} / {email}: the per-recipient parts; every style below must render to the same text.
_GREETING = "Hello {name},\n\n"
_FOOTER = "\n--\nThis message was sent to {email}. To unsubscribe, reply with the word stop.\n"
_PARAGRAPH = (
    "This month we opened two new service points, extended the opening hours of the support "
    "line and published the schedule for the spring workshops. Registration is open now and "
    "places are limited, so sign up early if you want to take part in one of the sessions.\n\n"
)
# Placeholder syntax per system: Mailman's header/footer templates use $-substitution,
# Django templates (django-newsletter) {{ }}, ours Jinja merge tags on the contact.
STYLES: dict[str, tuple[str, str]] = {
    "plain": ("{name}", "{email}"),
    "mailman": ("$user_name_or_email", "$user_email"),
    "django": ("{{ subscription.name }}", "{{ subscription.email }}"),
    "jinja": ("{{ contact.name }}", "{{ contact.email }}"),
}
# Headers a delivered copy carries on top of the body (From, To, Subject, Date, Message-ID,
# MIME and list headers): what the body is sized against.
_HEADER_ALLOWANCE = 450


def bulk_body() -> str:
    """The unpersonalised middle part of the newsletter (ASCII, nothing a template escapes)."""
    room = BULK_SIZE - _HEADER_ALLOWANCE - len(_GREETING) - len(_FOOTER)
    count = max(1, room // (len(_PARAGRAPH) + 3))
    return "".join(f"{n + 1}. {_PARAGRAPH}" for n in range(count))


def bulk_template(style: str = "plain") -> tuple[str, str, str]:
    """(greeting, body, footer) with ``style``'s placeholders for the name and the address."""
    name, email = STYLES[style]
    greeting = _GREETING.replace("{name}", name)
    footer = _FOOTER.replace("{email}", email)
    return greeting, bulk_body(), footer


def render_bulk(name: str, email: str) -> str:
    """The text recipient ``name <email>`` reads (greeting + body + footer)."""
    greeting, body, footer = bulk_template("plain")
    return greeting.format(name=name) + body + footer.format(email=email)


def recipients(count: int) -> Iterator[tuple[str, str]]:
    """``count`` deterministic (name, address) pairs, the same list for every system."""
    for n in range(count):
        yield f"{NAMES[n % len(NAMES)]} Member{n}", f"member{n:06d}@rcpt.example.test"


def bulk_post(list_address: str) -> bytes:
    """The post injected into a mailing list (Mailman): body only, header/footer come per member."""
    msg = EmailMessage()
    msg["From"] = BULK_SENDER
    msg["To"] = list_address
    msg["Subject"] = BULK_SUBJECT
    msg["Message-ID"] = f"<bulk-post@{BULK_DOMAIN}>"
    msg["Date"] = "Fri, 27 Nov 2026 12:00:00 +0000"
    msg.set_content(bulk_body())
    return msg.as_bytes()


# --- inbox ----------------------------------------------------------------------------------

# Corpus folders whose licences allow using the mails here (permissive ones only).
CORPUS_DIRS = ("django-helpdesk-eml", "ruby-mail-gem", "cpython-test-email", "talon-replies")
CORPUS_SUFFIXES = (".eml", ".txt")
QUEUE_ADDRESS = "support@helpdesk.example.test"
# How a follow-up finds its ticket: the ticket tag in the subject; In-Reply-To = the original's
# Message-ID; or In-Reply-To = the system's acknowledgement (unknown id) with the original
# only in References.
FOLLOWUP_KINDS = ("subject", "in-reply-to", "references")


@dataclasses.dataclass(frozen=True)
class Followup:
    index: int  # position in InboxWorkload.messages
    original: int  # position of the generated mail it answers (its ticket is original_rank + 1)
    kind: str  # one of FOLLOWUP_KINDS
    token: str


@dataclasses.dataclass(frozen=True)
class InboxWorkload:
    messages: list[bytes]
    originals: dict[int, str]  # position -> token, in order: the k-th (1-based) opens ticket k
    followups: list[Followup]
    corpus: list[int]  # positions of corpus mails
    corpus_files: list[str]

    def ticket_rank(self, position: int) -> int:
        """The ticket number a fresh system gives the generated mail at ``position`` (1-based)."""
        return sorted(self.originals).index(position) + 1


def find_corpus(repo_root: Path) -> Path | None:
    """/work/shared/corpus-style folder: ``<repo's parent>/shared/corpus``, if it exists."""
    candidate = repo_root.resolve().parent / "shared" / "corpus"
    return candidate if candidate.is_dir() else None


def corpus_mails(corpus_dir: Path | None, limit: int) -> list[tuple[str, bytes]]:
    """Up to ``limit`` (relative path, bytes) mails from the permissive corpus folders, sorted."""
    if corpus_dir is None or limit <= 0:
        return []
    found: list[tuple[str, bytes]] = []
    for sub in CORPUS_DIRS:
        folder = corpus_dir / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix in CORPUS_SUFFIXES and not path.name.startswith("EXPECTED"):
                data = path.read_bytes()
                if b"\n\n" in data.replace(b"\r\n", b"\n") and b":" in data[:200]:
                    found.append((str(path.relative_to(corpus_dir)), data))
    return found[:limit]


_TOPICS = (
    "Invoice {n} shows the wrong amount",
    "Cannot log in since the update",
    "Question about my order {n}",
    "Delivery {n} arrived damaged",
    "Please change my address",
    "Refund request for order {n}",
    "Workshop registration problem",
    "Password reset mail never arrives",
)


def _mail(
    n: int, sender: str, subject: str, text: str, rng: random.Random, when: datetime
) -> tuple[EmailMessage, str]:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = QUEUE_ADDRESS
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    message_id = f"<m{n}.{hashlib.sha1(subject.encode()).hexdigest()[:8]}@customer.example.org>"
    msg["Message-ID"] = message_id
    msg.set_content(text)
    kind = rng.random()
    if kind < 0.2:
        msg.add_alternative(
            f"<html><body><p>{text.replace(chr(10), '<br>')}</p></body></html>", subtype="html"
        )
    elif kind < 0.3:
        blob = rng.randbytes(2_000)
        msg.add_attachment(blob, maintype="application", subtype="octet-stream", filename=f"log-{n}.bin")
    if msg.is_multipart():
        msg.set_boundary(f"=_bench_{n}")  # deterministic bytes: the same folder for every system
    return msg, message_id


def inbox_workload(
    total: int,
    corpus_dir: Path | None,
    tag: Callable[[int], str],
    *,
    seed: int = 7,
) -> InboxWorkload:
    """``total`` mails: generated originals, then corpus mails and follow-ups interleaved.

    About a quarter are corpus mails (as many as the corpus has), a fifth follow-ups (a third
    of each FOLLOWUP_KINDS), the rest new generated tickets.
    """
    if total < 10:
        raise ValueError("an inbox workload needs at least 10 messages")
    rng = random.Random(seed)
    corpus = corpus_mails(corpus_dir, total // 4)
    n_followups = total // 5
    n_originals = total - len(corpus) - n_followups
    start = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    messages: list[bytes] = []
    originals: dict[int, str] = {}
    original_meta: list[tuple[int, str, str, str]] = []  # (position, sender, subject, message-id)
    for k in range(n_originals):
        sender = f"Customer {k} <customer{k}@customer.example.org>"
        subject = _TOPICS[k % len(_TOPICS)].format(n=10_000 + k)
        token = f"O{k}"
        text = (
            f"Hello support team,\n\n{subject}. Could you please look into it?\n"
            f"{'I attach the details below. ' * rng.randint(2, 12)}\n\n"
            f"bench-token: {token}\n\nBest regards,\nCustomer {k}\n"
        )
        msg, message_id = _mail(k, sender, subject, text, rng, start + timedelta(minutes=k))
        originals[len(messages)] = token
        original_meta.append((len(messages), sender, subject, message_id))
        messages.append(msg.as_bytes())
    tail: list[tuple[str, object]] = [("corpus", item) for item in corpus]
    tail += [("followup", j) for j in range(n_followups)]
    rng.shuffle(tail)
    followups: list[Followup] = []
    corpus_positions: list[int] = []
    for kind, item in tail:
        if kind == "corpus":
            corpus_positions.append(len(messages))
            messages.append(item[1])  # type: ignore[index]
            continue
        j = int(item)  # type: ignore[call-overload]
        rank = rng.randrange(n_originals)
        position, sender, subject, message_id = original_meta[rank]
        token = f"F{j}"
        kind = FOLLOWUP_KINDS[j % len(FOLLOWUP_KINDS)]
        text = f"Any news on this?\n\nbench-token: {token}\n\n> {subject}\n"
        reply_subject = f"Re: {tag(rank + 1)} {subject}" if kind == "subject" else f"Re: {subject}"
        msg, _ = _mail(
            n_originals + j, sender, reply_subject, text, rng, start + timedelta(days=2, minutes=j)
        )
        if kind == "in-reply-to":
            msg["In-Reply-To"] = message_id
            msg["References"] = message_id
        elif kind == "references":
            # A reply to the system's acknowledgement: its id is unknown to the importer,
            # the customer's original is only in References (what mail clients send).
            ack = f"<ack-{rank}@helpdesk.example.test>"
            msg["In-Reply-To"] = ack
            msg["References"] = f"{message_id} {ack}"
        followups.append(Followup(len(messages), position, kind, token))
        messages.append(msg.as_bytes())
    return InboxWorkload(messages, originals, followups, corpus_positions, [c[0] for c in corpus])
