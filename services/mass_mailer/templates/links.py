"""Built-in links and the "test links" action.

Built-in links are merge placeholders the sender fills per recipient: ``{{ links.unsubscribe }}``,
``{{ links.online_view }}``, ``{{ links.survey }}`` (valid ``survey_valid_days`` from sending;
``None`` = unlimited) and ``{{ links.calendar }}`` (.ics). A missing one renders as ``#``.

Testing links checks each URL's syntax and sends an HTTP HEAD to loopback targets; other hosts
are only contacted when the operator allows outside network access
(``MAILSVC_TEMPLATES_LINK_CHECK_EXTERNAL``), otherwise they are reported "not checked: no network".
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx

from services.mass_mailer.templates.content import BUILTIN_LINK_TAG, MERGE_OPEN

BUILTIN_LINKS = ("unsubscribe", "online_view", "survey", "calendar")
DEFAULT_SURVEY_VALID_DAYS = 30
MISSING_LINK = "#"


def placeholder(name: str) -> str:
    """The merge tag a design uses for a built-in link, e.g. ``{{ links.survey }}``."""
    if name not in BUILTIN_LINKS:
        raise KeyError(name)
    return "{{ links." + name + " }}"


def survey_valid_until(sent_at: datetime, valid_days: int | None) -> datetime | None:
    """When a survey link sent at ``sent_at`` stops working (``None``: never)."""
    return None if valid_days is None else sent_at + timedelta(days=valid_days)


def link_values(links: dict[str, str] | None) -> dict[str, str]:
    given = links or {}
    return {name: str(given.get(name) or MISSING_LINK) for name in BUILTIN_LINKS}


@dataclass(frozen=True)
class FoundLink:
    url: str
    tag: str
    attribute: str


class _LinkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[FoundLink] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src", "background") and value:
                self.found.append(FoundLink(value.strip(), tag, name))

    def handle_comment(self, data: str) -> None:
        inner = re.sub(r"^\[if [^\]]*\]>|<!\[endif\]$", "", data.strip())
        if "<" in inner:
            nested = _LinkCollector()
            nested.feed(inner)
            nested.close()
            self.found.extend(nested.found)


def collect_links(html: str) -> list[FoundLink]:
    """Every distinct link/image URL in rendered HTML, in document order."""
    collector = _LinkCollector()
    collector.feed(html)
    collector.close()
    seen: set[tuple[str, str]] = set()
    unique: list[FoundLink] = []
    for link in collector.found:
        if (link.url, link.attribute) not in seen:
            seen.add((link.url, link.attribute))
            unique.append(link)
    return unique


@dataclass(frozen=True)
class LinkReport:
    url: str
    tag: str
    attribute: str
    kind: str  # builtin | merge | static
    syntax_ok: bool
    status: str  # ok | broken | not checked: ... | error: ...
    http_status: int | None = None
    detail: str = ""


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _syntax(url: str) -> tuple[bool, str]:
    if url.startswith(("mailto:", "tel:", "sms:")):
        ok = bool(re.match(r"^(mailto|tel|sms):[^\s<>\"]+$", url))
        return ok, "" if ok else "malformed address"
    if url.startswith("#") or url.startswith("/"):
        return True, "relative link (no host to check)"
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        return False, str(exc)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False, "not an absolute http(s) URL"
    if re.search(r"\s", url):
        return False, "URL contains whitespace"
    return True, ""


async def _head(client: httpx.AsyncClient, url: str) -> tuple[str, int | None, str]:
    try:
        response = await client.head(url)
    except httpx.HTTPError as exc:
        return "broken", None, f"{type(exc).__name__}: {exc}"[:300]
    if response.status_code < 400:
        return "ok", response.status_code, ""
    return "broken", response.status_code, f"HTTP {response.status_code}"


async def check_links(html: str, *, external: bool, timeout_s: float) -> list[LinkReport]:
    """Check every link in a template's HTML; never raises for a bad link."""
    reports: list[LinkReport | None] = []
    checks: list[tuple[int, str]] = []
    for link in collect_links(html):
        base = {"url": link.url, "tag": link.tag, "attribute": link.attribute}
        if BUILTIN_LINK_TAG.match(link.url):
            reports.append(
                LinkReport(**base, kind="builtin", syntax_ok=True, status="not checked: filled per recipient")
            )
            continue
        if MERGE_OPEN.search(link.url):
            reports.append(
                LinkReport(**base, kind="merge", syntax_ok=True, status="not checked: contains merge tags")
            )
            continue
        if link.url.startswith("data:image/"):
            reports.append(
                LinkReport(**base, kind="static", syntax_ok=True, status="ok", detail="embedded image")
            )
            continue
        ok, detail = _syntax(link.url)
        if not ok:
            reports.append(LinkReport(**base, kind="static", syntax_ok=False, status="broken", detail=detail))
            continue
        host = urlsplit(link.url).hostname or ""
        if not link.url.startswith(("http://", "https://")):
            reports.append(
                LinkReport(
                    **base,
                    kind="static",
                    syntax_ok=True,
                    status="not checked: not an http(s) link",
                    detail=detail,
                )
            )
            continue
        if not (_is_loopback(host) or external):
            reports.append(
                LinkReport(**base, kind="static", syntax_ok=True, status="not checked: no network")
            )
            continue
        checks.append((len(reports), link.url))
        reports.append(LinkReport(**base, kind="static", syntax_ok=True, status="pending"))
    if checks:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
            results = await asyncio.gather(*(_head(client, url) for _, url in checks))
        for (index, _), (status, code, detail) in zip(checks, results, strict=True):
            old = reports[index]
            assert old is not None
            reports[index] = LinkReport(
                url=old.url, tag=old.tag, attribute=old.attribute, kind=old.kind,
                syntax_ok=True, status=status, http_status=code, detail=detail,
            )  # fmt: skip
    return [r for r in reports if r is not None]
