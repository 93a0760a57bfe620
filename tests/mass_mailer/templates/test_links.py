"""Built-in links and the test-links check against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from services.mass_mailer.templates.links import (
    BUILTIN_LINKS,
    check_links,
    collect_links,
    placeholder,
    survey_valid_until,
)
from services.mass_mailer.templates.render import render_design
from tests.mass_mailer.templates.helpers import element, text, with_body


class _Handler(BaseHTTPRequestHandler):
    methods: ClassVar[list[str]] = []

    def do_HEAD(self) -> None:
        self.methods.append(self.command)
        self.send_response(200 if self.path == "/ok" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_builtin_placeholders_and_survey_validity():
    assert [placeholder(n) for n in BUILTIN_LINKS] == [
        "{{ links.unsubscribe }}", "{{ links.online_view }}", "{{ links.survey }}", "{{ links.calendar }}",
    ]  # fmt: skip
    with pytest.raises(KeyError):
        placeholder("other")
    sent = datetime(2026, 1, 1, tzinfo=UTC)
    assert survey_valid_until(sent, 30) == datetime(2026, 1, 31, tzinfo=UTC)
    assert survey_valid_until(sent, None) is None


def test_each_link_gets_a_report(http_server):
    design = with_body(
        text(
            f'<a href="{http_server}/ok">ok</a> <a href="{http_server}/gone">gone</a> '
            f'<a href="http://127.0.0.1:1/closed">closed</a> <a href="https://www.example.test/x">ext</a> '
            '<a href="{{ links.unsubscribe }}">u</a> <a href="https://shop.test/p?id={{ contact.custom.id }}">p</a> '
            '<a href="mailto:help@example.test">m</a> <a href="https://bad host.test/">bad</a>'
        ),
        element("mj-button", "Survey", href="{{ links.survey }}"),
    )
    html = render_design(design).html
    found = collect_links(html)
    assert len(found) == 10 and found[0].tag == "link"  # the MJML font stylesheet counts too
    _Handler.methods.clear()
    reports = {r.url: r for r in asyncio.run(check_links(html, external=False, timeout_s=5))}
    assert reports[f"{http_server}/ok"].status == "ok" and reports[f"{http_server}/ok"].http_status == 200
    assert (
        reports[f"{http_server}/gone"].status == "broken"
        and reports[f"{http_server}/gone"].http_status == 404
    )
    assert reports["http://127.0.0.1:1/closed"].status == "broken"
    assert "ConnectError" in reports["http://127.0.0.1:1/closed"].detail
    assert reports["https://www.example.test/x"].status == "not checked: no network"
    assert reports["{{ links.unsubscribe }}"].kind == "builtin"
    assert reports["{{ links.survey }}"].status == "not checked: filled per recipient"
    assert reports["https://shop.test/p?id={{ contact.custom.id }}"].kind == "merge"
    assert reports["mailto:help@example.test"].syntax_ok
    assert (
        not reports["https://bad host.test/"].syntax_ok
        and reports["https://bad host.test/"].status == "broken"
    )
    assert _Handler.methods == ["HEAD", "HEAD"]  # HEAD only, loopback only
