"""``mailsvc render DESIGN.json [--data contact.json] [--text]``."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from shared.cli import app
from tests.mass_mailer.templates.helpers import DESIGNS, text, with_body

runner = CliRunner()
DESIGN = str(DESIGNS / "newsletter.json")


def test_render_prints_html_or_text():
    html = runner.invoke(app, ["render", DESIGN])
    assert html.exit_code == 0, html.output
    assert html.stdout.startswith("<!doctype html>") and "{{ links.unsubscribe }}" in html.stdout
    plain = runner.invoke(app, ["render", DESIGN, "--text"])
    assert plain.exit_code == 0 and plain.stdout.startswith("View in your browser ({{ links.online_view }})")


def test_render_with_contact_data(tmp_path):
    data = tmp_path / "contact.json"
    data.write_text(json.dumps({"first_name": "<Eve>", "custom": {"vip": True}}))
    html = runner.invoke(app, ["render", DESIGN, "--data", str(data)])
    assert html.exit_code == 0 and "Hello &lt;Eve&gt;!" in html.stdout and 'href="#"' in html.stdout
    plain = runner.invoke(app, ["render", DESIGN, "--data", str(data), "--text"])
    assert "Hello <Eve>!" in plain.stdout and "As a VIP you get 20% off." in plain.stdout


def test_invalid_designs_exit_2_with_a_clear_message(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(with_body({"tagName": "mj-include", "attributes": {"path": "/etc/passwd"}})))
    result = runner.invoke(app, ["render", str(bad)])
    assert (
        result.exit_code == 2
        and "invalid design" in result.output
        and "mj-include is not allowed" in result.output
    )
    script = tmp_path / "script.json"
    script.write_text(json.dumps(with_body(text("<script>alert(1)</script>"))))
    assert runner.invoke(app, ["render", str(script)]).exit_code == 2
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = runner.invoke(app, ["render", str(broken)])
    assert result.exit_code == 2 and "cannot read design" in result.output
    assert runner.invoke(app, ["render", str(tmp_path / "missing.json")]).exit_code == 2
