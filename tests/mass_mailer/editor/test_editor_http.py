"""The editor's HTTP side: a page and assets without secrets under a strict CSP, and the MJML
conversion endpoints behind the API key."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.mass_mailer.editor import api as editor_api
from services.mass_mailer.templates import api as templates_api
from services.mass_mailer.templates.design import validate_design
from shared.apikeys import create_api_key
from shared.db import migrate, session_scope
from shared.service import build_service
from shared.settings import Settings
from tests.mass_mailer.templates.helpers import newsletter

EDITOR = Path(editor_api.__file__).parent


@pytest.fixture
def client(tmp_path):
    url = f"sqlite:///{tmp_path / 'editor.sqlite'}"
    migrate("mass_mailer", url)
    with session_scope(url) as session:
        _, reader = create_api_key(session, "reader", ["templates:read"])
        _, other = create_api_key(session, "other", ["contacts:read"])
    app = build_service(
        "mass_mailer", title="editor", description="editor", register_consumers=lambda context: None,
        api_routers=lambda context: [*templates_api.routers(context), *editor_api.routers(context)],
        settings=Settings(data_dir=tmp_path / "var", database_url=url),
    )  # fmt: skip
    test_client = TestClient(app.http)
    test_client.keys = {"reader": reader, "other": other}  # type: ignore[attr-defined]
    return test_client


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self.handlers: list[str] = []
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.handlers += [name for name in values if name.startswith("on")]
        self.urls += [v for k, v in values.items() if k in ("src", "href") and v]
        if tag == "script":
            self.scripts.append(values)
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        self._in_script = tag != "script" and self._in_script

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)


@pytest.mark.parametrize("path", ["/editor/new", "/editor/42"])
def test_page_has_no_inline_script_no_secret_and_a_strict_policy(client, path):
    reply = client.get(path)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    policy = dict(part.split(" ", 1) for part in reply.headers["content-security-policy"].split("; "))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert "unsafe-eval" not in reply.headers["content-security-policy"]
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["cache-control"] == "no-store"
    parsed = _Scripts()
    parsed.feed(reply.text)
    assert parsed.scripts == [{"src": "/editor/static/editor.js", "defer": None}]
    assert parsed.inline == [] and parsed.handlers == []
    assert all(url.startswith(("/editor/static/", "data:")) for url in parsed.urls), parsed.urls
    assert not re.search(r"msk_\w+_\w+", reply.text)  # no key, not even the bootstrap one


def test_page_ids_are_checked(client):
    assert client.get("/editor/0").status_code == 422
    assert client.get("/editor/abc").status_code == 422


def test_assets_are_served_with_their_types_and_nothing_else(client):
    for name, kind in (
        ("editor.js", "text/javascript"),
        ("editor.css", "text/css"),
        ("licenses.txt", "text/plain"),
    ):
        reply = client.get(f"/editor/static/{name}")
        assert reply.status_code == 200, name
        assert reply.headers["content-type"].startswith(kind)
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.content == (EDITOR / "static" / name).read_bytes()
    bundle = client.get("/editor/static/editor.js", headers={"Accept-Encoding": "gzip"})
    assert bundle.headers["content-encoding"] == "gzip" and bundle.headers["vary"] == "Accept-Encoding"
    assert int(bundle.headers["content-length"]) < len(bundle.content) / 2
    plain = client.get("/editor/static/editor.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == bundle.content
    again = client.get("/editor/static/editor.js", headers={"If-None-Match": bundle.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    for name in ("editor.html", "..%2Fapi.py", "editor.js.map", "package.json"):
        assert client.get(f"/editor/static/{name}").status_code == 404, name
    licenses = client.get("/editor/static/licenses.txt").text
    assert "grapesjs@" in licenses and "grapesjs-mjml@" in licenses and "mjml-browser@" in licenses


def test_built_page_matches_its_source():
    # `npm run build` copies the page; a hand edit of only one copy would drift.
    assert (EDITOR / "static" / "editor.html").read_bytes() == (
        EDITOR / "frontend" / "src" / "editor.html"
    ).read_bytes()
    assert (EDITOR / "frontend" / "package-lock.json").is_file()
    bundle = (EDITOR / "static" / "editor.js").read_text(encoding="utf-8")
    assert "mailsvc.apiKey" in bundle and "/v1/editor/from-mjml" in bundle


def test_conversion_endpoints_need_a_key_with_templates_read(client):
    body = {"design": newsletter()}
    assert client.post("/v1/editor/to-mjml", json=body).status_code == 401
    assert (
        client.post("/v1/editor/to-mjml", json=body, headers={"X-API-Key": client.keys["other"]}).status_code
        == 403
    )
    assert client.post("/v1/editor/from-mjml", json={"mjml": "<mjml/>"}).status_code == 401


def test_conversion_round_trip_and_errors(client):
    headers = {"X-API-Key": client.keys["reader"]}
    mjml = client.post("/v1/editor/to-mjml", json={"design": newsletter()}, headers=headers)
    assert mjml.status_code == 200, mjml.text
    back = client.post("/v1/editor/from-mjml", json=mjml.json(), headers=headers)
    assert back.status_code == 200, back.text
    assert back.json()["design"] == validate_design(newsletter())

    bad = client.post(
        "/v1/editor/from-mjml", json={"mjml": '<!DOCTYPE x [<!ENTITY a "b">]><mjml/>'}, headers=headers
    )
    assert bad.status_code == 422 and "declarations" in bad.json()["detail"]
    hostile = {
        "tagName": "mjml",
        "children": [{"tagName": "mj-body", "children": [{"tagName": "mj-include"}]}],
    }
    refused = client.post("/v1/editor/to-mjml", json={"design": hostile}, headers=headers)
    assert refused.status_code == 422 and "mj-include" in refused.json()["detail"]
    too_long = client.post("/v1/editor/from-mjml", json={"mjml": " " * 2_000_001}, headers=headers)
    assert too_long.status_code == 422


def test_missing_assets_are_a_clear_error(client, tmp_path, monkeypatch):
    monkeypatch.setattr(editor_api, "STATIC", tmp_path / "not-built")
    editor_api._asset.cache_clear()
    try:
        for path in ("/editor/new", "/editor/static/editor.js"):
            reply = client.get(path)
            assert reply.status_code == 503 and "built assets are missing" in reply.json()["detail"]
    finally:
        editor_api._asset.cache_clear()
