"""Per-recipient template rendering: CompiledTemplate.render() on a realistic ~20 KB mail.

    uv run python -m bench.template_render [--seconds 3]

MJML runs once (as at save time); the timed loop only fills merge tags (subject, HTML, text)
for varying contacts, which is all a bulk sender does per recipient. The last line is
``RESULT renders_per_s=... us_per_render=... html_bytes=... mjml_ms=...``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from services.mass_mailer.templates.compiled import CompiledTemplate
from services.mass_mailer.templates.render import render_design


def _el(tag: str, attrs: dict[str, str] | None = None, *children: Any, content: str | None = None) -> dict:
    node: dict[str, Any] = {"tagName": tag, "attributes": attrs or {}}
    if content is not None:
        node["content"] = content
    else:
        node["children"] = list(children)
    return node


def bench_design(sections: int = 4) -> dict[str, Any]:
    """About 20 KB of HTML once rendered: a greeting, ``sections`` articles, a footer."""
    paragraph = (
        "Liebe Kundin, lieber Kunde - hier sind die Neuigkeiten des Monats (Grüße aus Köln). "
        "Unsere Herbstaktion läuft bis Ende des Monats. "
    )
    greeting = "<p>Hallo {{ contact.first_name | default('Kundin, Kunde') }} {{ contact.last_name }},</p>"
    footer = '<a href="{{ links.unsubscribe }}">Abmelden</a> | <a href="{{ links.online_view }}">Online</a>'
    blocks = [
        _el(
            "mj-section",
            {"background-color": "#ffffff", "padding": "10px 0"},
            _el(
                "mj-column",
                {},
                _el("mj-image", {"src": f"https://cdn.example.test/{i}.png", "alt": f"Bild {i}"}),
                _el("mj-text", content=f"<h2>Thema {i}</h2><p>{paragraph * 3}</p>"),
                _el(
                    "mj-button",
                    {"href": f"https://www.example.test/a/{i}?c={{{{ contact.custom.id }}}}"},
                    content="Mehr lesen",
                ),
            ),
        )
        for i in range(sections)
    ]
    body = _el(
        "mj-body",
        {},
        _el("mj-section", {}, _el("mj-column", {}, _el("mj-text", content=greeting))),
        *blocks,
        _el(
            "mj-section",
            {},
            _el(
                "mj-column",
                {},
                _el("mj-text", {"font-size": "11px"}, content=footer),
                _el("mj-button", {"href": "{{ links.survey }}"}, content="Zur Umfrage"),
            ),
        ),
    )
    return _el("mjml", {}, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    started = time.perf_counter()
    rendered = render_design(bench_design(), preheader="Neuigkeiten für {{ contact.first_name }}")
    mjml_ms = (time.perf_counter() - started) * 1000
    compiled = CompiledTemplate(
        template_id=1,
        version_id=1,
        subject="{{ contact.first_name | default('Hallo') }}, unsere Herbstaktion",
        html=rendered.html,
        text=rendered.text,
    )
    contacts = [
        {"first_name": f"Name{i}", "last_name": f"Nachname<{i}>", "email": f"u{i}@example.test",
         "custom": {"id": str(i)}}
        for i in range(1000)
    ]  # fmt: skip
    links = {
        "unsubscribe": "https://mail.example.test/u/abcdef0123456789",
        "online_view": "https://mail.example.test/v/abcdef0123456789",
        "survey": "https://mail.example.test/s/abcdef0123456789",
        "calendar": "https://mail.example.test/c/abcdef0123456789.ics",
    }
    sample = compiled.render(contact=contacts[0], links=links)
    html_bytes = len(sample.html.encode()) + len(sample.text.encode())
    for contact in contacts[:200]:  # warm-up
        compiled.render(contact=contact, links=links)
    count = 0
    deadline = time.perf_counter() + args.seconds
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.perf_counter() < deadline:
        for contact in contacts[:100]:
            compiled.render(contact=contact, links=links)
        count += 100
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    print(f"html {len(sample.html)} chars, text {len(sample.text)} chars; MJML once: {mjml_ms:.1f} ms")
    print(
        f"RESULT renders_per_s={count / wall:.0f} us_per_render={cpu / count * 1e6:.1f} "
        f"html_bytes={html_bytes} mjml_ms={mjml_ms:.1f}"
    )


if __name__ == "__main__":
    main()
