"""MJML text <-> MJML-JSON for the editor: lossless round trips over every design in the test data
(and the real template corpus in ../shared when present), and a strict reader for hostile input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.mass_mailer.editor.convert import MAX_MJML_CHARS, design_to_mjml, mjml_to_design, parse_mjml
from services.mass_mailer.templates.content import DesignError
from services.mass_mailer.templates.design import MAX_DEPTH, design_from_mjml, validate_design
from tests.mass_mailer import designs
from tests.mass_mailer.templates.helpers import newsletter
from tests.mass_mailer.templates.parity import CORPUS

DESIGN_FILES = sorted((Path(__file__).parents[1] / "templates" / "designs").glob("*.json"))


def round_trip(design: dict) -> None:
    valid = validate_design(design)
    text = design_to_mjml(design)
    assert parse_mjml(text) == valid
    assert mjml_to_design(text) == valid
    assert design_to_mjml(mjml_to_design(text)) == text


def test_round_trip_of_the_test_designs():
    tricky = designs.text(
        '<p style="color:#333">Hello {{ contact.first_name | default("you") }} &amp; &nbsp;friends'
        ' <a href="https://example.org/?a=1&amp;b=2">more</a><br>line<br/>two</p>\n  ',
        align="center",
    )
    button = {"tagName": "mj-button", "attributes": {"href": "{{ links.survey }}"}, "content": "Survey"}
    samples = [
        designs.one_column(designs.text("Hello")),
        designs.one_column(tricky, button, designs.text("")),
        newsletter(),
        *[json.loads(path.read_text(encoding="utf-8")) for path in DESIGN_FILES],
    ]
    assert DESIGN_FILES
    for design in samples:
        round_trip(design)


def test_round_trip_keeps_head_attributes_quotes_and_unicode():
    design = {
        "tagName": "mjml",
        "attributes": {"lang": "de"},
        "children": [
            {
                "tagName": "mj-head",
                "attributes": {},
                "children": [
                    {"tagName": "mj-title", "attributes": {}, "content": "Größe & Preis \"quoted\" 'x' &amp;"},
                    {"tagName": "mj-preview", "attributes": {}, "content": "Vorschau & mehr"},
                    {"tagName": "mj-style", "attributes": {}, "content": ".x { color: red; }"},
                    {
                        "tagName": "mj-attributes",
                        "attributes": {},
                        "children": [{"tagName": "mj-all", "attributes": {"font-family": "Arial, sans-serif"}}],
                    },
                ],
            },
            {
                "tagName": "mj-body",
                "attributes": {"background-color": "#f0f0f0"},
                "children": [
                    {
                        "tagName": "mj-section",
                        "attributes": {"css-class": "hero top"},
                        "children": [
                            {
                                "tagName": "mj-column",
                                "attributes": {"width": "50%"},
                                "children": [
                                    {"tagName": "mj-image", "attributes": {"src": "https://x.test/a.png?a=1&b=2", "alt": "Ünïcode {{ contact.first_name }}"}},
                                    {"tagName": "mj-raw", "attributes": {}, "content": "<!-- note --><p>raw</p>"},
                                    {"tagName": "mj-divider", "attributes": {}},
                                    {"tagName": "mj-spacer", "attributes": {"height": "20px"}},
                                ],
                            },
                        ],
                    }
                ],
            },
        ],
    }  # fmt: skip
    round_trip(design)


@pytest.mark.timeout(120)
def test_round_trip_of_the_template_corpus():
    files = sorted(CORPUS.rglob("*.mjml")) if CORPUS.is_dir() else []
    if not files:
        pytest.skip(f"template corpus not present at {CORPUS}")
    checked = 0
    for path in files:
        try:
            design = validate_design(design_from_mjml(path.read_text(encoding="utf-8")))
        except DesignError:
            continue  # our validator refuses it: nothing the editor could load
        round_trip(design)
        checked += 1
    assert checked >= len(files) // 2


TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters='<>"`\\'), max_size=40)


@settings(max_examples=60, deadline=None)
@given(title=TEXT, alt=TEXT.filter(lambda s: not any(c in s for c in "\x00\x7f") and s.isprintable()))
def test_round_trip_of_generated_text(title: str, alt: str):
    design = designs.one_column(
        {"tagName": "mj-image", "attributes": {"alt": alt, "src": "https://x.test/i.png"}}
    )
    design["children"].insert(
        0,
        {"tagName": "mj-head", "attributes": {}, "children": [{"tagName": "mj-title", "attributes": {}, "content": title}]},
    )  # fmt: skip
    try:
        validate_design(design)
    except DesignError:
        return
    round_trip(design)


def test_reads_editor_style_mjml():
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<!-- exported -->\n'
        "<mjml>\n  <mj-body>\n    <mj-section>\n      <mj-column>\n"
        "        <mj-text font-size='14px'>Hi &amp; bye</mj-text>\n"
        '        <mj-image src="https://x.test/a.png?a=1&amp;b=2" alt="A &#233; &#x41;&amp;&apos;"/>\n'
        "        <mj-text/>\n"
        "      </mj-column>\n    </mj-section>\n  </mj-body>\n</mjml>\n"
    )
    design = mjml_to_design(text)
    column = design["children"][0]["children"][0]["children"][0]
    assert column["children"] == [
        {"tagName": "mj-text", "attributes": {"font-size": "14px"}, "content": "Hi &amp; bye"},
        {
            "tagName": "mj-image",
            "attributes": {"src": "https://x.test/a.png?a=1&b=2", "alt": "A é A&'"},
            "children": [],
        },
        {"tagName": "mj-text", "attributes": {}, "content": ""},
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('<!DOCTYPE mjml [<!ENTITY a "aaaa">]><mjml><mj-body/></mjml>', "declarations"),
        ("<mjml><!ENTITY x SYSTEM 'file:///etc/passwd'><mj-body/></mjml>", "declarations"),
        ("<mjml><mj-body><![CDATA[x]]></mj-body></mjml>", "declarations"),
        ("<mjml><?php echo 1 ?><mj-body/></mjml>", "processing instructions"),
        ("<mjml><mj-body></mjml>", "expected </mj-body>"),
        ("<mjml><mj-body>", "not closed"),
        (
            "<mjml><mj-body><mj-section><mj-column><mj-text>x</mj-column></mj-section></mj-body></mjml>",
            "not closed",
        ),
        ("<mjml><mj-body>stray text</mj-body></mjml>", "text is only allowed"),
        ('<mjml lang="a" lang="b"><mj-body/></mjml>', "repeated"),
        ("<mjml lang=en><mj-body/></mjml>", "quoted values"),
        ("<mjml lang><mj-body/></mjml>", "quoted values"),
        ('<mjml lang="<x>"><mj-body/></mjml>', "'<'"),
        ("<mjml><mj-body/></mjml><mjml/>", "after the root"),
        ("<mjml><mj-head><mj-title><b>x</b></mj-title></mj-head><mj-body/></mjml>", "plain text"),
        ("<mj-body/>", "root element must be <mjml>"),
        ("<mjml><!-- open", "unterminated comment"),
        ("", "expected an element"),
    ],
)
def test_refuses_malformed_and_hostile_mjml(text: str, reason: str):
    with pytest.raises(DesignError, match=reason):
        parse_mjml(text)


def test_entities_are_not_expanded_beyond_character_references():
    # No DTD means no entity can be defined: an undefined name stays literal text and the
    # validator then judges the value.
    design = parse_mjml('<mjml lang="&lol9;&amp;"><mj-body/></mjml>')
    assert design["attributes"] == {"lang": "&lol9;&"}


def test_validation_runs_on_what_the_editor_sends():
    hostile = (
        "<mjml><mj-body><mj-section><mj-column>"
        '<mj-button href="javascript:alert(1)">x</mj-button>'
        "</mj-column></mj-section></mj-body></mjml>"
    )
    with pytest.raises(DesignError, match="javascript"):
        mjml_to_design(hostile)
    with pytest.raises(DesignError, match="not allowed"):
        mjml_to_design("<mjml><mj-body><mj-include path='/etc/passwd'/></mj-body></mjml>")
    with pytest.raises(DesignError, match="script"):
        mjml_to_design(
            "<mjml><mj-body><mj-section><mj-column><mj-text><script>x</script></mj-text>"
            "</mj-column></mj-section></mj-body></mjml>"
        )


def test_limits():
    deep = "<mjml><mj-body>" + "<mj-wrapper>" * (MAX_DEPTH + 5) + "</mj-wrapper>" * (MAX_DEPTH + 5)
    with pytest.raises(DesignError, match="nesting deeper"):
        parse_mjml(deep + "</mj-body></mjml>")
    with pytest.raises(DesignError, match="longer than"):
        parse_mjml("<mjml>" + " " * MAX_MJML_CHARS + "</mjml>")
    many = "<mjml><mj-body>" + "<mj-spacer/>" * 6_000 + "</mj-body></mjml>"
    with pytest.raises(DesignError, match="more than"):
        parse_mjml(many)
