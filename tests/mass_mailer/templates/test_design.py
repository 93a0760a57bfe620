"""Design validation (allowlist, hostile values) and MJML serialisation."""

from __future__ import annotations

import pytest

from services.mass_mailer.templates.content import DesignError
from services.mass_mailer.templates.design import (
    design_from_mjml,
    to_mjml,
    validate_design,
)
from tests.mass_mailer.templates.helpers import element, newsletter, text, with_body


def rejects(design, fragment: str) -> str:
    with pytest.raises(DesignError) as info:
        validate_design(design)
    assert fragment in str(info.value), str(info.value)
    return str(info.value)


def test_the_sample_newsletter_is_valid_and_round_trips_through_mjml_xml():
    design = validate_design(newsletter())
    xml = to_mjml(design)
    assert xml.startswith('<mjml lang="en"><mj-head>')
    assert validate_design(design_from_mjml(xml)) == design


@pytest.mark.parametrize(
    ("node", "fragment"),
    [
        (element("mj-include", path="/etc/passwd"), "mj-include is not allowed"),
        (element("mj-include", path="header.mjml"), "mj-include is not allowed"),
        (element("mj-script"), "tag <mj-script> is not allowed"),
        (element("mj-html-attributes"), "tag <mj-html-attributes> is not allowed"),
        (text("<script>alert(1)</script>"), "<script> is not allowed"),
        (text('<iframe src="https://evil.test"></iframe>'), "<iframe> is not allowed"),
        (text('<img src="x" onerror="alert(1)">'), "event handler attribute 'onerror'"),
        (text('<a href="javascript:alert(1)">x</a>'), "scheme 'javascript:'"),
        (text('<a href="JaVaScRiPt:alert(1)">x</a>'), "scheme 'javascript:'"),
        (text('<a href="&#106;avascript:alert(1)">x</a>'), "scheme 'javascript:'"),
        (text('<a href="java\tscript:alert(1)">x</a>'), "scheme 'javascript:'"),
        (text('<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>'), "scheme 'data:'"),
        (text('<img src="data:image/svg+xml;base64,PHN2Zz4=">'), "scheme 'data:'"),
        (text('<p style="background:url(javascript:alert(1))">x</p>'), "forbidden construct"),
        (text('<p style="width:expression(alert(1))">x</p>'), "forbidden construct"),
        (text("<form action='x'><input></form>"), "<form> is not allowed"),
        (text('<p data-x="1">x</p>'), "attribute 'data-x' is not allowed"),
        (text("<!--[if mso]><script>x</script><![endif]-->"), "<script> is not allowed"),
        (text("<![CDATA[x]]>"), "not allowed"),
        (text("a <{{ contact.first_name }}> b"), "literal '<'"),
        (text('<p style="color:{{ contact.custom.c }}">x</p>'), "merge tags are not allowed"),
        (text('<a href="{{ contact.custom.url }}">x</a>'), "fixed https://host/"),
        (text('<a href="https://{{ contact.custom.host }}/x">x</a>'), "fixed https://host/"),
        (element("mj-image", src="https://x.test/a.png", alt='a" onload="alert(1)'), 'one of " < >'),
        (element("mj-image", src='https://x.test/a.png" onerror="x'), 'one of " < >'),
        (element("mj-button", "x", href="vbscript:msgbox"), "scheme 'vbscript:'"),
        (element("mj-button", "x", background_color="red;position:fixed"), "';', '{' or '}'"),
        (
            element("mj-button", "x", background_color="{{ contact.first_name }}"),
            "merge tags are not allowed",
        ),
        (element("mj-button", "x", onclick="alert(1)"), "attribute 'onclick' is not allowed"),
        (element("mj-button", "x", unknown_attr="1"), "attribute 'unknown-attr' is not allowed"),
        (element("mj-text", "x", align="middle"), "must be one of"),
        (element("mj-image", src="https://x.test/a.png", css_class='a"b'), "class names"),
    ],
)
def test_hostile_or_unknown_input_is_rejected(node, fragment):
    rejects(with_body(node), fragment)


def test_no_merge_tags_in_css_or_fonts():
    style = element("mj-style", ".a { color: {{ contact.custom.c }} }")
    rejects(with_body(text("x"), head=[style]), "merge tags are not allowed in CSS")
    font = element("mj-font", name="X", href="https://f.test/{{ contact.custom.c }}")
    rejects(with_body(text("x"), head=[font]), "merge tags are not allowed in mj-font")
    rejects(with_body(text("x"), head=[element("mj-style", "</mj-style><mj-raw>x</mj-raw>")]), "forbidden")
    rejects(with_body(text("</mj-text><mj-include path='/etc/passwd'/>")), "</mj-text> is not allowed")


def test_allowed_urls_and_merge_tags():
    design = with_body(
        text(
            '<a href="{{ links.unsubscribe }}">u</a> <a href="https://shop.test/p?id={{ contact.custom.id }}">p</a>'
        ),
        text('<a href="mailto:help@example.test">m</a> <a href="tel:+491234">t</a> <a href="#top">x</a>'),
        element("mj-image", src="data:image/png;base64,iVBORw0KGgo=", alt="Hi {{ contact.first_name }}"),
        element("mj-button", "Survey", href="{{ links.survey }}"),
    )
    validate_design(design)


def test_structure_limits():
    node = text("x")
    for _ in range(40):
        node = {"tagName": "mj-wrapper", "attributes": {}, "children": [node]}
    rejects(with_body(node), "nesting deeper")
    many = with_body(*[text("x") for _ in range(5_001)])
    rejects(many, "more than 5000 elements")
    rejects(with_body(text("x" * 300_000)), "content longer")
    rejects({"tagName": "mj-body"}, "root element")
    rejects({"tagName": "mjml", "attributes": {}, "children": []}, "one mj-body")
    rejects(with_body({"tagName": "mj-text", "attributes": {}, "content": 5}), "content must be a string")
    rejects(
        with_body({"tagName": "mj-text", "attributes": [], "content": ""}), "attributes must be an object"
    )
    rejects(with_body({"tagName": "mj-text", "evil": 1}), "unknown keys")
    rejects(with_body(element("mj-button", "x", href=["x"])), "string or a number")


def test_elements_must_sit_in_their_place():
    rejects(with_body(element("mj-title", "x")), "belongs in <mj-head>")
    rejects(with_body(element("mj-font", name="A", href="https://f.test/a")), "belongs in <mj-head>")
    rejects(with_body({"tagName": "mj-body", "attributes": {}, "children": []}), "directly in <mjml>")
    rejects(with_body({"tagName": "mjml", "attributes": {}, "children": []}), "only the root")
    rejects(with_body(element("mj-all", font_family="Arial")), "tag <mj-all> is not allowed")


def test_known_renderer_bugs_are_normalised_or_rejected():
    image = validate_design(with_body(element("mj-image", src="https://x.test/a.png", width="300.7px")))
    body = image["children"][0]["children"][0]["children"][0]["children"][0]
    assert body["attributes"]["width"] == "300px"
    section = with_body(text("x"))
    section["children"][0]["children"][0]["attributes"]["border-radius"] = "8px"
    rejects(section, "border-radius on mj-section")
    font = {"tagName": "mj-font", "attributes": {"name": "Lato", "href": "https://f.test/lato"}}
    rejects(with_body(text("x"), head=[font, font]), "declared twice")
    rejects(with_body(text("x"), head=[text("x")]), "does not belong in mj-head")


def test_serialisation_escapes_attributes_and_text():
    design = validate_design(
        with_body(
            element("mj-image", src="https://x.test/a.png?a=1&b=2", alt="Tom & Jerry's"),
            head=[element("mj-title", "Fish & <Chips>".replace("<", "").replace(">", ""))],
        )
    )
    xml = to_mjml(design)
    assert 'src="https://x.test/a.png?a=1&amp;b=2"' in xml
    assert 'alt="Tom &amp; Jerry\'s"' in xml
    assert "<mj-title>Fish &amp; Chips</mj-title>" in xml
    with pytest.raises(DesignError, match="plain text"):
        validate_design(with_body(text("x"), head=[element("mj-title", "<b>x</b>")]))


def test_mjml_xml_import_turns_comments_into_mj_raw():
    design = design_from_mjml(
        "<mjml><mj-body><!-- hello --><mj-section><mj-column><mj-text>Hi <b>x</b></mj-text>"
        "</mj-column></mj-section></mj-body></mjml>"
    )
    body = design["children"][0]
    assert body["children"][0] == {"tagName": "mj-raw", "attributes": {}, "content": "<!-- hello -->"}
    assert body["children"][1]["children"][0]["children"][0]["content"] == "Hi <b>x</b>"
    with pytest.raises(DesignError):
        design_from_mjml("<html></html>")
