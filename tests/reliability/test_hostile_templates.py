"""Hostile template designs through the running mass mailer's HTTP API: every one is refused with
a clear 422 on create, on update and on "render unsaved", and nothing is stored or announced.

The unit tests in tests/mass_mailer/templates check the validator itself; this suite goes through
the service (request parsing, the API, the store) and adds payloads aimed at the whole path.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.mass_mailer.app import create_app as create_mailer
from tests.integration.harness import AUTH
from tests.mass_mailer.templates.helpers import element, text, with_body
from tests.reliability.hostile_support import Running, hostile_settings, started

pytestmark = pytest.mark.timeout(240)


def nested(depth: int, tag: str = "mj-wrapper") -> dict[str, Any]:
    node: dict[str, Any] = text("x")
    for _ in range(depth):
        node = {"tagName": tag, "attributes": {}, "children": [node]}
    return node


def attributes(**attrs: Any) -> dict[str, Any]:
    """An mj-button with raw attribute names (may contain anything)."""
    return with_body({"tagName": "mj-button", "attributes": attrs, "content": "x"})


HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    # structure
    "nested-200": (with_body(nested(200)), "nesting deeper than"),
    "nodes-6000": (with_body(*[text("x") for _ in range(6_000)]), "more than"),
    "content-300k": (with_body(text("x" * 300_000)), "content longer"),
    "design-2mb": (with_body(*[text("y" * 150_000) for _ in range(14)]), "larger than"),
    "root-not-mjml": ({"tagName": "mj-body", "attributes": {}, "children": []}, "root element"),
    # scripts, frames, active content
    "script": (with_body(text("<script>alert(1)</script>")), "<script> is not allowed"),
    "script-in-svg": (with_body(text("<svg><script>alert(1)</script></svg>")), "not allowed"),
    "svg-onload": (with_body(text("<svg onload=alert(1)></svg>")), "not allowed"),
    "iframe": (with_body(text('<iframe src="https://evil.test"></iframe>')), "<iframe> is not allowed"),
    "object": (with_body(text('<object data="https://evil.test/x.swf"></object>')), "not allowed"),
    "embed": (with_body(text('<embed src="https://evil.test/x.swf">')), "not allowed"),
    "meta-refresh": (
        with_body(text('<meta http-equiv="refresh" content="0;url=https://evil.test">')),
        "not allowed",
    ),
    "base-href": (with_body(text('<base href="https://evil.test/">')), "not allowed"),
    "link-stylesheet": (
        with_body(text('<link rel="stylesheet" href="https://evil.test/x.css">')),
        "not allowed",
    ),
    "form": (with_body(text("<form action='https://evil.test'><input name=p></form>")), "not allowed"),
    "onerror": (with_body(text('<img src="https://x.test/a.png" onerror="alert(1)">')), "onerror"),
    "mj-raw-script": (with_body(element("mj-raw", "<script>alert(1)</script>")), "not allowed"),
    "conditional-comment": (with_body(text("<!--[if mso]><script>x</script><![endif]-->")), "not allowed"),
    # URLs
    "javascript-href": (with_body(text('<a href="javascript:alert(1)">x</a>')), "javascript:"),
    "javascript-entity": (with_body(text('<a href="&#106;avascript:alert(1)">x</a>')), "javascript:"),
    "javascript-tab": (with_body(text('<a href="java\tscript:alert(1)">x</a>')), "javascript:"),
    "javascript-space": (with_body(text('<a href="  javascript:alert(1)">x</a>')), "javascript:"),
    "javascript-button": (with_body(element("mj-button", "x", href="javascript:alert(1)")), "javascript:"),
    "javascript-image": (with_body(element("mj-image", src="javascript:alert(1)")), "javascript:"),
    "vbscript": (with_body(element("mj-button", "x", href="vbscript:msgbox(1)")), "vbscript:"),
    "data-html": (with_body(text('<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>')), "data:"),
    "data-svg": (with_body(element("mj-image", src="data:image/svg+xml;base64,PHN2Zz4=")), "data:"),
    "css-url-javascript": (
        with_body(text('<p style="background:url(javascript:alert(1))">x</p>')),
        "forbidden",
    ),
    "css-expression": (with_body(text('<p style="width:expression(alert(1))">x</p>')), "forbidden"),
    "css-import": (
        with_body(text("x"), head=[element("mj-style", "@import url(https://evil.test/x.css);")]),
        "forbidden",
    ),
    "merge-tag-host": (
        with_body(text('<a href="https://{{ contact.custom.host }}/x">x</a>')),
        "https://host/",
    ),
    "merge-tag-whole-url": (
        with_body(element("mj-button", "x", href="{{ contact.custom.url }}")),
        "https://host/",
    ),
    # mj-include and unknown tags
    "mj-include-abs": (with_body(element("mj-include", path="/etc/passwd")), "mj-include is not allowed"),
    "mj-include-rel": (
        with_body(element("mj-include", path="../../secrets.mjml")),
        "mj-include is not allowed",
    ),
    "mj-include-head": (with_body(text("x"), head=[element("mj-include", path="/etc/passwd")]), "mj-include"),
    "mj-include-via-content": (
        with_body(text("</mj-text><mj-include path='/etc/passwd'/><mj-text>")),
        "is not allowed",
    ),
    "mj-raw-breakout": (
        with_body(element("mj-raw", "</mj-raw><mj-include path='/etc/passwd'/>")),
        "not allowed",
    ),
    "mj-html-attributes": (with_body(element("mj-html-attributes")), "not allowed"),
    # attribute injection
    "alt-quote": (
        with_body(element("mj-image", src="https://x.test/a.png", alt='a" onload="alert(1)')),
        '" < >',
    ),
    "src-quote": (with_body(element("mj-image", src='https://x.test/a.png" onerror="alert(1)')), '" < >'),
    "attr-name-quote": (attributes(**{'href" onmouseover="alert(1)': "https://x.test/"}), "not allowed"),
    "attr-name-space": (attributes(**{"a b": "1"}), "not allowed"),
    "attr-onclick": (attributes(onclick="alert(1)"), "'onclick' is not allowed"),
    "css-in-attr": (attributes(**{"background-color": "red;position:fixed"}), "';', '{' or '}'"),
    "css-class-quote": (with_body(element("mj-image", src="https://x.test/a.png", css_class='a"b')), "class"),
    "attr-list-value": (attributes(href=["https://x.test/"]), "string or a number"),
    "attr-object-value": (attributes(href={"$gt": ""}), "string or a number"),
    # merge-tag sandbox escapes
    "ssti-class": (with_body(text("{{ ''.__class__.__mro__ }}")), "not allowed"),
    "ssti-globals": (with_body(text("{{ cycler.__init__.__globals__ }}")), "not allowed"),
    "ssti-include": (with_body(text("{% include '/etc/passwd' %}")), "body"),
    "ssti-call": (with_body(text("{{ range(100000000) | list }}")), "not allowed"),
    "ssti-arithmetic": (with_body(text("{{ 'a' * 100000000 }}")), "not allowed"),
}


@pytest.fixture(scope="module")
async def mailer(kafka_broker, tmp_path_factory) -> AsyncIterator[Running]:
    settings, names = hostile_settings(kafka_broker, tmp_path_factory.mktemp("templates"))
    async with started(create_mailer, settings, names) as running:
        yield running


@pytest.fixture(scope="module")
async def existing(mailer: Running) -> dict[str, Any]:
    """One good template, version 1: hostile updates must leave it exactly as it is."""
    body = {"name": "Good", "subject": "Hello {{ contact.first_name }}", "design": with_body(text("Hello"))}
    reply = await mailer.client.post("/v1/templates", headers=AUTH, json=body)
    assert reply.status_code == 201, reply.text
    return reply.json()


async def state(mailer: Running, template_id: int) -> tuple[Any, ...]:
    listed = await mailer.client.get("/v1/templates", headers=AUTH)
    versions = await mailer.client.get(f"/v1/templates/{template_id}/versions", headers=AUTH)
    current = await mailer.client.get(f"/v1/templates/{template_id}", headers=AUTH)
    assert listed.status_code == versions.status_code == current.status_code == 200
    return (
        [t["id"] for t in listed.json()],
        [v["id"] for v in versions.json()],
        current.json()["design"],
        current.json()["current_version_id"],
    )


def clear(reply: Any, fragment: str) -> None:
    """A 422 whose message names the problem (and is not a server error or a stack trace)."""
    assert reply.status_code == 422, (reply.status_code, reply.text[:300])
    detail = reply.json()["detail"]
    message = detail if isinstance(detail, str) else json.dumps(detail)
    assert fragment.lower() in message.lower(), message[:500]
    assert "Traceback" not in message


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_design_is_refused_with_a_clear_422_and_never_stored(
    mailer: Running, existing: dict[str, Any], case: str
) -> None:
    design, fragment = HOSTILE[case]
    before = await state(mailer, existing["id"])
    client = mailer.client
    created = await client.post(
        "/v1/templates", headers=AUTH, json={"name": f"Evil {case}", "subject": "Hi", "design": design}
    )
    clear(created, fragment)
    patched = await client.patch(f"/v1/templates/{existing['id']}", headers=AUTH, json={"design": design})
    clear(patched, fragment)
    rendered = await client.post("/v1/templates/render", headers=AUTH, json={"design": design})
    clear(rendered, fragment)
    assert await state(mailer, existing["id"]) == before  # no template, no version, no change


SUBJECTS = {
    "crlf": "Hi\r\nBcc: victim@example.org",
    "lf": "Hi\nX-Evil: 1",
    "nul": "Hi\x00there",
    "ssti": "{{ ''.__class__.__mro__ }}",
    "syntax": "Hi {{ contact.first_name ",
}


@pytest.mark.parametrize("case", sorted(SUBJECTS))
async def test_hostile_subject_is_refused(mailer: Running, existing: dict[str, Any], case: str) -> None:
    before = await state(mailer, existing["id"])
    body = {"name": "Evil subject", "subject": SUBJECTS[case], "design": with_body(text("x"))}
    created = await mailer.client.post("/v1/templates", headers=AUTH, json=body)
    assert created.status_code == 422, created.text[:300]
    patched = await mailer.client.patch(
        f"/v1/templates/{existing['id']}", headers=AUTH, json={"subject": SUBJECTS[case]}
    )
    assert patched.status_code == 422, patched.text[:300]
    assert await state(mailer, existing["id"]) == before


async def test_json_nested_beyond_the_parser_limit_is_a_clear_client_error(
    mailer: Running, existing: dict[str, Any]
) -> None:
    """100,000 levels of JSON nesting: the request is refused (4xx), the service keeps serving."""
    deep = '{"tagName":"mjml","children":[' * 100_000 + "]}" * 100_000
    raw = '{"name":"Deep","subject":"Hi","design":' + deep + "}"
    before = await state(mailer, existing["id"])
    reply = await mailer.client.post(
        "/v1/templates", headers={**AUTH, "Content-Type": "application/json"}, content=raw.encode()
    )
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.text[:300])
    assert await state(mailer, existing["id"]) == before
    assert (await mailer.client.get("/healthz")).status_code == 200
