"""Merge tags in the sandbox: what a template can reach, escaping, defaults, errors."""

from __future__ import annotations

import threading

import pytest

from services.mass_mailer.templates.compiled import CompiledTemplate
from services.mass_mailer.templates.merge import MergeError, compile_merge

LINKS = {"unsubscribe": "https://m.test/u/1?a=1&b=2", "online_view": "https://m.test/v/1"}


def merge(source: str, *, html: bool = True, **context) -> str:
    return compile_merge(source, html=html, where="body").render(**context)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__.os }}",
        "{{ lipsum.__globals__['os'].popen('id').read() }}",
        "{{ contact['__class__'] }}",
        "{{ self.__init__ }}",
        "{{ range(10) }}",
        "{{ 'a' * 1000000 }}",
        "{{ 9 ** 9 ** 9 }}",
        "{% set x = 1 %}",
        "{% macro m() %}{% endmacro %}",
        "{% include '/etc/passwd' %}",
        "{% import 'x' as y %}",
        "{% extends 'base' %}",
        "{{ contact | attr('__class__') }}",
        "{{ contact.items() }}",
        "{{ contact.first_name.upper() }}",
        "{{ contact[contact.key] }}",
        "{% for a in contact.custom.l %}{% for b in contact.custom.l %}{% endfor %}{% endfor %}",
        "{{ x | map('upper') }}",
        "{{ _private }}",
    ],
)
def test_escapes_are_rejected_at_save_time(source):
    with pytest.raises(MergeError):
        compile_merge(source, html=True, where="body")


def test_syntax_errors_name_the_place_and_line():
    with pytest.raises(MergeError, match=r"subject, line 2: template syntax error"):
        compile_merge("Hello\n{{ contact.first_name ", html=False, where="subject")
    with pytest.raises(MergeError, match="syntax error"):
        compile_merge("{% if x %}unclosed", html=True, where="body")


def test_only_the_given_context_is_reachable_even_past_the_checks():
    # The environment itself refuses internals, whatever the template source says.
    from services.mass_mailer.templates.merge import HTML_ENV

    template = HTML_ENV.from_string(
        "[{{ ''.__class__ }}][{{ cycler }}][{{ contact.__class__ }}][{{ namespace }}]"
    )
    assert template.render(contact={"a": 1}) == "[][][][]"
    calls = HTML_ENV.from_string("{{ contact.keys() }}")
    with pytest.raises(Exception, match="calls are not allowed"):
        calls.render(contact={})


def test_html_escaping_defaults_and_missing_values():
    html = merge(
        '<p title="{{ contact.first_name }}">Hi {{ contact.first_name | default("customer") }}'
        "{{ contact.custom.a.b.c }}{{ nothing }}</p>",
        contact={"first_name": '"><script>alert(1)</script>', "custom": {}},
    )
    assert "<script>" not in html and "&#34;&gt;&lt;script&gt;" in html
    assert merge('{{ contact.first_name | default("customer") }}', contact={}) == "customer"
    assert merge("{{ contact.custom.vip }}", contact={"custom": {"vip": None}}) == ""
    assert merge("{{ x }}", html=False, x="<b>&") == "<b>&"


def test_compiled_template_renders_subject_html_and_text_per_recipient():
    compiled = CompiledTemplate(
        template_id=7,
        version_id=3,
        subject="Hi {{ contact.first_name | default('customer') }}",
        html='<a href="{{ links.unsubscribe }}">x</a><a href="{{ links.survey }}">s</a> {{ event.title }}',
        text="Unsubscribe: {{ links.unsubscribe }} {{ contact.custom.code }} {{ event.title }}",
        sender_identity="News",
        survey_valid_days=30,
    )
    mail = compiled.render(
        contact={"first_name": "Ann\r\nBcc: evil@x.test", "custom": {"code": "A<1>"}},
        links=LINKS,
        extra={"event": {"title": "Fair & Expo"}},
    )
    assert mail.subject == "Hi Ann Bcc: evil@x.test"  # one header line
    assert 'href="https://m.test/u/1?a=1&amp;b=2"' in mail.html and 'href="#"' in mail.html
    assert "Fair &amp; Expo" in mail.html
    assert mail.text == "Unsubscribe: https://m.test/u/1?a=1&b=2 A<1> Fair & Expo"
    assert compiled.render(contact={"first_name": ""}, links={}).subject == "Hi customer"
    with pytest.raises(ValueError, match="must not redefine"):
        compiled.render(contact={}, links={}, extra={"contact": {}})


def test_compiled_template_is_thread_safe():
    compiled = CompiledTemplate(
        template_id=1, version_id=1, subject="{{ contact.email }}", html="x", text="y"
    )
    results: dict[int, str] = {}

    def work(i: int) -> None:
        for _ in range(200):
            got = compiled.render(contact={"email": f"u{i}@x.test"}, links={}).subject
            if got != f"u{i}@x.test":
                results[i] = got
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {}
