"""Rendering a design: MJML port output, the text part, the HTML limit, renderer bug guards."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.mass_mailer.templates.compiled import CompiledTemplate, without_indentation
from services.mass_mailer.templates.content import DesignError
from services.mass_mailer.templates.merge import MergeError, compile_merge
from services.mass_mailer.templates.plaintext import html_to_text
from services.mass_mailer.templates.render import MAX_HTML_CHARS, render_design
from tests.mass_mailer.templates.helpers import element, newsletter, text, with_body


def test_newsletter_renders_with_merge_tags_kept_for_per_recipient_filling():
    rendered = render_design(newsletter(), preheader="News for {{ contact.first_name }}")
    assert rendered.html.startswith("<!doctype html>")
    assert 'href="{{ links.survey }}"' in rendered.html
    assert 'Hello {{ contact.first_name | default("customer") }}!' in rendered.html
    assert "News for {{ contact.first_name }}" in rendered.html  # hidden preheader
    assert 'width="200"' in rendered.html  # fractional width normalised
    # mj-font reusing a default name: no crash, and its URL (not the port's default) is used
    assert "family=Roboto:400,700" in rendered.html and "Roboto:300,400,500,700" not in rendered.html
    assert "Take the survey ({{ links.survey }})" in rendered.text
    assert "News for" not in rendered.text and "font-family" not in rendered.text
    mail = CompiledTemplate(template_id=1, version_id=1, subject="s", html=rendered.html, text=rendered.text)
    out = mail.render(
        contact={"first_name": "Zoë", "custom": {"vip": True}}, links={"survey": "https://s.test/1"}
    )
    assert "Hello Zoë!" in out.html and "20% off" in out.html and 'href="https://s.test/1"' in out.html
    assert "Take the survey (https://s.test/1)" in out.text


def test_merge_errors_in_the_body_are_reported():
    with pytest.raises(MergeError, match="body"):
        render_design(with_body(text("Hi {{ contact.first_name ")))
    with pytest.raises(MergeError, match="not allowed"):
        render_design(with_body(text("{{ ''.__class__ }}")))


def test_the_html_limit_of_65000_characters():
    big = with_body(*[text(f"<p>{'Lorem ipsum dolor sit amet. ' * 30}</p>") for _ in range(80)])
    with pytest.raises(DesignError, match="65,000"):
        render_design(big)
    assert len(render_design(big, enforce_limit=False).html) > MAX_HTML_CHARS


def test_navbar_conditional_comment_is_well_formed():
    navbar = {
        "tagName": "mj-navbar",
        "attributes": {"hamburger": "hamburger"},
        "children": [element("mj-navbar-link", "Home", href="https://x.test/")],
    }
    html = render_design(with_body(navbar)).html
    assert "<!--[if !mso><!-->" not in html


def test_inline_mj_style_stays_in_the_head():
    style = element("mj-style", ".x { color: red; }", inline="inline")
    html = render_design(with_body(text("x", **{"css-class": "x"}), head=[style])).html
    assert ".x { color: red; }" in html


def test_html_to_text():
    html = (
        "<html><head><title>T</title><style>p{}</style></head><body>"
        '<div style="display:none">preheader</div><h1>Title</h1><p>One &amp; two<br>three</p>'
        '<ul><li>a</li><li>b</li></ul><a href="https://x.test/">Link</a> <img alt="Logo" src="x">'
        "<!--[if mso]><p>outlook only</p><![endif]--></body></html>"
    )
    assert html_to_text(html) == "Title\n\nOne & two\nthree\n\n- a\n\n- b\n\nLink (https://x.test/) Logo\n"


@settings(max_examples=60, deadline=None)
@given(
    value=st.text(max_size=40)
    | st.sampled_from(['"><script>alert(1)</script>', "' onerror='x", "javascript:x"])
)
def test_hostile_contact_data_never_breaks_out(value):
    mail = _HOSTILE.render(contact={"first_name": value, "custom": {"id": value}}, links={})
    assert "<script" not in mail.html.lower().replace("&lt;script", "")
    assert 'onerror="' not in mail.html and "onerror='" not in mail.html
    assert "\n" not in mail.subject and "\r" not in mail.subject


def _hostile_template() -> CompiledTemplate:
    design = with_body(
        element("mj-image", src="https://x.test/a.png", alt="{{ contact.first_name }}"),
        element(
            "mj-button", "Go {{ contact.first_name }}", href="https://x.test/p?id={{ contact.custom.id }}"
        ),
        text('<p title="{{ contact.first_name }}">{{ contact.first_name }}</p>'),
    )
    rendered = render_design(design)
    return CompiledTemplate(
        template_id=1,
        version_id=1,
        subject="Hi {{ contact.first_name }}",
        html=rendered.html,
        text=rendered.text,
    )


_HOSTILE = _hostile_template()


def _rendered_text(html: str) -> str:
    """What a reader shows, roughly: the text outside tags and comments, whitespace collapsed."""
    from html.parser import HTMLParser

    pieces: list[str] = []

    class Texts(HTMLParser):
        def handle_data(self, data: str) -> None:
            pieces.append(data)

    Texts().feed(html)
    return " ".join("".join(pieces).split())


def test_sent_html_loses_its_indentation_and_reads_the_same():
    rendered = render_design(newsletter())
    compiled = CompiledTemplate(
        template_id=1, version_id=1, subject="s", html=rendered.html, text=rendered.text
    )
    mail = compiled.render(contact={"first_name": "Anna"}, links={"unsubscribe": "https://u.example/x"})
    assert "\n  " not in mail.html and len(mail.html) < len(rendered.html)
    original = CompiledTemplate(template_id=1, version_id=2, subject="s", html="", text="")
    original._html = compile_merge(rendered.html, html=True, where="body")  # the unstripped HTML
    same = original.render(contact={"first_name": "Anna"}, links={"unsubscribe": "https://u.example/x"})
    assert _rendered_text(mail.html) == _rendered_text(same.html)


def test_html_that_keeps_whitespace_is_sent_as_rendered():
    for html in ("<div>\n  <pre>\n  a\n    b</pre>\n</div>", '<p style="white-space: pre">\n  x</p>'):
        assert without_indentation(html) == html
    assert without_indentation("<div>\n  <p>\n\t x</p>\n</div>") == "<div>\n<p>\nx</p>\n</div>"
