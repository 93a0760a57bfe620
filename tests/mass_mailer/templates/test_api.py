"""The templates API on SQLite and PostgreSQL: versions, catalogue events, preview, links."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from services.mass_mailer.templates import api as templates_api
from services.mass_mailer.templates import compiled, store
from services.mass_mailer.templates.preview import find_chromium, png_size
from shared.apikeys import create_api_key
from shared.db import migrate, session_scope
from shared.outbox import OutboxEvent
from shared.service import ServiceApp, build_service
from shared.settings import Settings
from tests.mass_mailer.templates.helpers import newsletter, text, with_body


def create_templates_app(settings: Settings) -> ServiceApp:
    """The mass mailer's HTTP side with only the templates routers."""
    return build_service(
        "mass_mailer",
        title="templates",
        description="templates",
        register_consumers=lambda context: None,
        api_routers=templates_api.routers,
        settings=settings,
    )


@pytest.fixture
def api(db_url, tmp_path):
    settings = Settings(data_dir=tmp_path / "var", database_url=db_url, templates_preview_height=400)
    migrate("mass_mailer", db_url)
    with session_scope(db_url) as session:
        _, writer = create_api_key(session, "writer", ["templates:read", "templates:write"])
        _, reader = create_api_key(session, "reader", ["templates:read"])
    client = TestClient(create_templates_app(settings).http)
    client.headers["X-API-Key"] = writer
    client.reader_key = reader  # type: ignore[attr-defined]
    return client


def body(**overrides):
    values = {
        "name": "Autumn newsletter",
        "subject": "News for {{ contact.first_name | default('you') }}",
        "preheader": "What is new, {{ contact.first_name }}",
        "design": newsletter(),
    }
    values.update(overrides)
    return values


def _deep(levels: int) -> dict:
    node: dict = {"tagName": "mj-body", "children": []}
    for _ in range(levels):
        node = {"tagName": "mj-wrapper", "children": [node]}
    return node


def catalogue(db_url) -> list[tuple[str | None, dict]]:
    with session_scope(db_url) as session:
        rows = session.exec(select(OutboxEvent).order_by(OutboxEvent.id)).all()
        return [(r.key, json.loads(r.payload)) for r in rows if r.topic == "mail.templates"]


def test_crud_with_immutable_versions_and_catalogue_events(api, db_url):
    created = api.post("/v1/templates", json=body())
    assert created.status_code == 201, created.text
    template = created.json()
    tid, v1 = template["id"], template["current_version_id"]
    assert template["version_count"] == 1 and template["survey_valid_days"] == 30

    patched = api.patch(
        f"/v1/templates/{tid}", json={"subject": "Second {{ contact.email }}", "survey_valid_days": None}
    )
    assert patched.status_code == 200, patched.text
    v2 = patched.json()["current_version_id"]
    assert v2 != v1 and patched.json()["survey_valid_days"] is None

    versions = api.get(f"/v1/templates/{tid}/versions", headers={"X-API-Key": api.reader_key}).json()
    assert [(v["number"], v["subject"]) for v in versions] == [
        (1, "News for {{ contact.first_name | default('you') }}"),
        (2, "Second {{ contact.email }}"),
    ]
    first = api.get(f"/v1/templates/{tid}/versions/{v1}").json()
    assert first["html"].startswith("<!doctype html>") and "{{ links.survey }}" in first["text"]
    assert first["mjml"].startswith("<mjml") and first["survey_valid_days"] == 30

    with session_scope(db_url) as session:
        old = compiled.compiled_version(session, v1)
        assert old is store.compiled_version(session, v1)  # cached per version
        assert old.survey_valid_days == 30
        current = store.current_version(session, tid)
        assert current is not None and current.version_id == v2 and current.survey_valid_days is None
        mail = current.render(contact={"email": "z@x.test"}, links={})
        assert mail.subject == "Second z@x.test"
        with pytest.raises(KeyError):
            store.compiled_version(session, 999_999)

    assert api.patch(f"/v1/templates/{tid}", json={"active": False}).status_code == 200
    with session_scope(db_url) as session:
        assert store.current_version(session, tid) is None
    assert api.delete(f"/v1/templates/{tid}").status_code == 204
    assert api.get(f"/v1/templates/{tid}").status_code == 404
    assert api.get("/v1/templates").json() == []

    events = catalogue(db_url)
    assert [e["kind"] for _, e in events] == ["template.upserted"] * 3 + ["template.deleted"]
    assert {key for key, _ in events} == {str(tid)}
    assert events[0][1]["current_version_id"] == v1 and events[1][1]["current_version_id"] == v2
    assert events[0][1]["message_id"] == str(uuid.uuid5(store.CATALOGUE_NAMESPACE, f"{tid}:{v1}"))
    assert events[3][1]["active"] is False
    assert len({e["message_id"] for _, e in events}) == 4


def test_if_match_refuses_a_save_over_someone_elses_version(api):
    tid = api.post("/v1/templates", json=body()).json()["id"]
    read = api.get(f"/v1/templates/{tid}")
    tag = read.headers["ETag"]
    assert tag == f'"{read.json()["current_version_id"]}"'

    mine = api.patch(f"/v1/templates/{tid}", json={"subject": "Mine"}, headers={"If-Match": tag})
    assert mine.status_code == 200, mine.text
    assert mine.headers["ETag"] == f'"{mine.json()["current_version_id"]}"' != tag

    theirs = api.patch(f"/v1/templates/{tid}", json={"subject": "Stale"}, headers={"If-Match": tag})
    assert theirs.status_code == 412 and "version 2" in theirs.json()["detail"]
    now = api.get(f"/v1/templates/{tid}").json()
    assert (now["subject"], now["version_count"]) == ("Mine", 2)  # nothing saved

    for shape in ("{tag}", '"1", {tag}', "*"):  # a list of ETags, or any version
        accepted = shape.format(tag=api.get(f"/v1/templates/{tid}").headers["ETag"])
        reply = api.patch(f"/v1/templates/{tid}", json={"name": accepted}, headers={"If-Match": accepted})
        assert reply.status_code == 200, (accepted, reply.text)
    # Clients that do not send If-Match keep working (last save wins for them).
    assert api.patch(f"/v1/templates/{tid}", json={"name": "no precondition"}).status_code == 200


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"design": with_body(text("<script>x</script>"))}, "<script> is not allowed"),
        (
            {"design": with_body({"tagName": "mj-include", "attributes": {"path": "/etc/passwd"}})},
            "mj-include",
        ),
        ({"subject": "Hi {{ contact.first_name "}, "subject, line 1: template syntax error"),
        ({"subject": "{{ ''.__class__ }}"}, "not allowed"),
        ({"preheader": "{{ cycler.__init__.__globals__ }}"}, "not allowed"),
        ({"design": with_body(text("{% for x in y %}"))}, "body, line"),
        ({"sender_identity": "nobody"}, "no sender identity 'nobody'"),
        ({"design": {"tagName": "mjml", "children": [_deep(200)]}}, "nesting deeper than 30"),
    ],
)
def test_bad_templates_get_a_clear_422_and_nothing_is_stored(api, db_url, overrides, fragment):
    response = api.post("/v1/templates", json=body(**overrides))
    assert response.status_code == 422, response.text
    assert fragment in response.text
    assert api.get("/v1/templates").json() == [] and catalogue(db_url) == []


def test_scopes_and_unknown_ids(api):
    reader = {"X-API-Key": api.reader_key}
    assert api.post("/v1/templates", json=body(), headers=reader).status_code == 403
    assert api.get("/v1/templates", headers={"X-API-Key": "msk_x_y"}).status_code == 401
    assert api.get("/v1/templates/4242").status_code == 404
    assert api.patch("/v1/templates/4242", json={"name": "x"}).status_code == 404
    assert api.patch("/v1/templates/4242", json={"name": None}).status_code == 422


def test_render_unsaved_design_with_and_without_data(api):
    plain = api.post("/v1/templates/render", json={"design": newsletter(), "subject": "Hi"})
    assert plain.status_code == 200, plain.text
    assert "{{ links.unsubscribe }}" in plain.json()["html"] and plain.json()["html_chars"] < 65_000
    merged = api.post(
        "/v1/templates/render",
        json={
            "design": newsletter(),
            "subject": "Hi {{ contact.first_name }}",
            "data": {"contact": {"first_name": "<i>Kim</i>"}, "links": {"unsubscribe": "https://u.test/1"}},
        },
    ).json()
    assert merged["subject"] == "Hi <i>Kim</i>"
    assert "Hello &lt;i&gt;Kim&lt;/i&gt;!" in merged["html"] and 'href="https://u.test/1"' in merged["html"]
    bad = api.post("/v1/templates/render", json={"design": {"tagName": "mjml"}})
    assert bad.status_code == 422


def test_preview_and_test_links(api):
    tid = api.post("/v1/templates", json=body()).json()["id"]
    preview = api.post(
        f"/v1/templates/{tid}/preview",
        json={
            "data": {"contact": {"first_name": "Ada"}},
            "screenshots": find_chromium("/usr/bin/chromium") is not None,
        },
    )
    assert preview.status_code == 200, preview.text
    out = preview.json()
    assert out["subject"] == "News for Ada" and "Hello Ada!" in out["html"]
    if out["screenshots"]:
        sizes = [png_size(base64.b64decode(s["png_base64"])) for s in out["screenshots"]]
        assert sizes == [(375, 400), (800, 400)]
    links = api.post(f"/v1/templates/{tid}/test-links").json()
    statuses = {item["url"]: item["status"] for item in links["links"]}
    assert statuses["{{ links.unsubscribe }}"] == "not checked: filled per recipient"
    assert statuses["https://www.example.test/privacy"] == "not checked: no network"
    assert links["broken"] == 0


def test_preview_without_chromium_is_503(db_url, tmp_path):
    settings = Settings(
        data_dir=tmp_path / "var", database_url=db_url, templates_chromium=str(tmp_path / "none")
    )
    migrate("mass_mailer", db_url)
    with session_scope(db_url) as session:
        _, key = create_api_key(session, "w", ["templates:write", "templates:read"])
    client = TestClient(create_templates_app(settings).http, headers={"X-API-Key": key})
    tid = client.post("/v1/templates", json=body()).json()["id"]
    response = client.post(f"/v1/templates/{tid}/preview", json={})
    assert response.status_code == 503 and "Chromium" in response.json()["detail"]
