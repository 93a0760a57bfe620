"""The editor page in Debian's Chromium (Playwright, no browser download) against the real mass
mailer (Kafka, SQLite, the gateway into an aiosmtpd sink) listening on 127.0.0.1.

Drags blocks with real mouse drag-and-drop into the GrapesJS canvas, edits text in its rich-text
editor, saves through the template API, reloads, previews (server rendering, sandboxed iframes),
sends a test mail, and shows the server's validation errors in the page.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.async_api import Locator, Page, async_playwright, expect

from services.mass_mailer.app import create_app as create_mailer
from shared.secretbox import generate_master_key
from shared.service import ServiceApp
from shared.settings import Settings
from tests.integration.harness import API_KEY, AUTH, eventually, running, service_settings
from tests.mass_mailer.designs import one_column, text

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 60_000  # generous: a loaded 2-core machine; every wait returns as soon as it holds
NEW_TEXT = "Autumn sale starts on Monday"
expect.set_options(timeout=WAIT_MS)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} missing (.ci/run installs chromium)"),
]


@pytest.fixture
def settings(kafka_broker, unique, smtp_sink, tmp_path) -> Settings:
    return service_settings(
        kafka_broker, unique, tmp_path,
        smtp_host=smtp_sink.host, smtp_port=smtp_sink.port, master_key=generate_master_key(),
        default_sender="noreply@example.com", mail_domain="mail.example.com",
    )  # fmt: skip


@dataclass
class Service:
    url: str
    client: httpx.AsyncClient


@asynccontextmanager
async def listening(settings: Settings) -> AsyncIterator[Service]:
    """The mass mailer started by the harness, plus a real uvicorn listener for the browser."""
    started: list[ServiceApp] = []

    def create(values: Settings) -> ServiceApp:
        started.append(create_mailer(values))
        return started[0]

    async with running(create, settings) as client:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(started[0], lifespan="off", log_level="warning"))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            await eventually(lambda: server.started or serving.done(), timeout=60)
            assert server.started, "uvicorn did not start"
            yield Service(f"http://127.0.0.1:{port}", client)
        finally:
            server.should_exit = True
            await serving
            sock.close()


@asynccontextmanager
async def browser_page() -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 900})
            context.set_default_timeout(WAIT_MS)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page
            assert errors == [], "uncaught errors in the page"
        finally:
            await browser.close()


async def create_template(client: httpx.AsyncClient, design: dict) -> int:
    reply = await client.post(
        "/v1/templates", headers=AUTH, json={"name": "Autumn", "subject": "News", "design": design}
    )
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


async def open_editor(page: Page, url: str, template_id: int) -> None:
    await page.goto(f"{url}/editor/{template_id}")
    await expect(page.locator("#key-panel")).to_be_visible()
    await page.fill("#api-key", API_KEY)
    await page.click("#key-ok")
    await page.wait_for_selector(f"body[data-loaded='{template_id}']")


PLACEHOLDER_SHOWN = """() => {
    const p = document.querySelector('.gjs-placeholder');
    return !!p && getComputedStyle(p).display !== 'none' && p.getBoundingClientRect().width > 0;
}"""


async def drag_block(page: Page, title: str, onto: Locator, appears: Locator) -> None:
    """Real mouse drag-and-drop from the block panel into the canvas iframe, just below ``onto``.

    Like a person, hover over the drop point until GrapesJS shows its drop placeholder (it works
    out the position from dragover events as they come), then release; try again if the block
    did not land (a drag that starts while the canvas still lays out is lost)."""
    block = page.locator(f"#blocks .gjs-block[title='{title}']")
    for attempt in range(3):
        await block.scroll_into_view_if_needed()
        source, target = await block.bounding_box(), await onto.bounding_box()
        assert source and target
        x, y = target["x"] + target["width"] / 2, target["y"] + target["height"] - 2
        await page.mouse.move(source["x"] + source["width"] / 2, source["y"] + source["height"] / 2)
        await page.mouse.down()
        await page.mouse.move(x, y - 6, steps=12)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await page.mouse.move(x, y - (int(time.monotonic() * 10) % 2), steps=1)
            if await page.evaluate(PLACEHOLDER_SHOWN):
                break
        await page.mouse.up()
        try:
            await expect(appears).to_have_count(1, timeout=15_000)
            return
        except AssertionError:
            if attempt == 2:
                raise


EVERY_BLOCK = """async () => {
    // Each palette block alone in a design, exported by GrapesJS, converted and rendered by the server.
    const editor = window.mailsvcEditor;
    const original = editor.getHtml();
    const post = async (path, body) => {
        const response = await fetch(path, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', 'X-API-Key': sessionStorage.getItem('mailsvc.apiKey') },
            body: JSON.stringify(body),
        });
        return [response.status, await response.json()];
    };
    const inColumn = (inner) => `<mj-body><mj-section><mj-column>${inner}</mj-column></mj-section></mj-body>`;
    const results = {};
    for (const block of editor.Blocks.getAll().models) {
        const content = String(block.get('content'));
        let body = inColumn(content);
        if (/^\\s*<mj-(section|wrapper|hero)\\b/.test(content)) body = `<mj-body>${content}</mj-body>`;
        if (/^\\s*<mj-social-element\\b/.test(content)) body = inColumn(`<mj-social>${content}</mj-social>`);
        if (/^\\s*<mj-navbar-link\\b/.test(content)) body = inColumn(`<mj-navbar>${content}</mj-navbar>`);
        editor.setComponents(`<mjml>${body}</mjml>`);
        const [status, converted] = await post('/v1/editor/from-mjml', { mjml: editor.getHtml() });
        if (status !== 200) { results[block.id] = `from-mjml ${status}: ${JSON.stringify(converted)}`; continue; }
        const [rendered, out] = await post('/v1/templates/render', { design: converted.design, data: {} });
        results[block.id] = rendered === 200 ? 'ok' : `render ${rendered}: ${JSON.stringify(out)}`;
    }
    editor.setComponents(original);
    return results;
}"""
PALETTE = {
    "mj-1-column", "mj-2-columns", "mj-3-columns", "mj-text", "mj-image", "mj-button", "mj-divider",
    "mj-spacer", "mj-social-group", "mailsvc-unsubscribe", "mailsvc-online-view", "mailsvc-survey",
    "mailsvc-calendar", "mailsvc-greeting",
}  # fmt: skip


def spaced(html: str) -> str:
    return html.replace("\xa0", " ").replace("&nbsp;", " ")


def save_artifact(path: Path) -> None:
    folder = os.environ.get("MAILSVC_TEST_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(folder) / path.name)


async def test_drag_edit_save_reload_preview_and_test_send(settings, smtp_sink, tmp_path):
    async with listening(settings) as service, browser_page() as page:
        template_id = await create_template(service.client, one_column(text("Welcome to our news")))
        await open_editor(page, service.url, template_id)
        canvas = page.frame_locator("iframe.gjs-frame")
        welcome = canvas.get_by_text("Welcome to our news")

        dropped = canvas.get_by_text("Insert text here")
        await drag_block(page, "Text", welcome, dropped)
        await welcome.click()  # select something else: the dropped text opened in the text editor
        await drag_block(page, "Button", dropped, canvas.get_by_text("Button", exact=True))

        # Edit the dropped text in the rich-text editor, with a merge tag from the picker.
        await dropped.dblclick()
        await expect(canvas.locator("[contenteditable='true']")).to_be_visible()
        await page.keyboard.press("ControlOrMeta+A")
        await page.keyboard.type(f"{NEW_TEXT}, ")
        await page.select_option("select.mailsvc-merge", "{{ contact.first_name }}")
        await welcome.click()  # leaving the text commits the edit
        await expect(canvas.get_by_text(NEW_TEXT)).to_be_visible()

        await page.click("#save")
        await expect(page.locator("#status")).to_contain_text("version 2")
        await expect(page.locator("#errors")).to_be_hidden()

        await page.reload()  # the key stays in this tab's sessionStorage
        await page.wait_for_selector(f"body[data-loaded='{template_id}']")
        await expect(canvas.get_by_text(NEW_TEXT)).to_be_visible()
        await expect(canvas.get_by_text("Button", exact=True)).to_be_visible()

        stored = (await service.client.get(f"/v1/templates/{template_id}", headers=AUTH)).json()
        assert stored["version_count"] == 2
        column = stored["design"]["children"][-1]["children"][0]["children"][0]
        blocks = [(c["tagName"], c["content"]) for c in column["children"]]
        assert blocks[0] == ("mj-text", "Welcome to our news")
        assert blocks[1][0] == "mj-text" and NEW_TEXT in blocks[1][1]
        assert "{{ contact.first_name }}" in blocks[1][1]
        assert blocks[2] == ("mj-button", "Button")
        rendered = await service.client.post(
            "/v1/templates/render", headers=AUTH, json={"design": stored["design"], "data": {}}
        )
        assert rendered.status_code == 200, rendered.text
        # The browser's text editor turns the space before the merge tag into a no-break space.
        assert f"{NEW_TEXT}, Alex" in spaced(rendered.json()["html"]), blocks
        assert re.search(r">\s*Button\s*</(a|p)>", rendered.json()["html"])
        version = (
            await service.client.get(
                f"/v1/templates/{template_id}/versions/{stored['current_version_id']}", headers=AUTH
            )
        ).json()
        assert NEW_TEXT in version["html"] and "{{ contact.first_name }}" in version["html"]

        # Server-rendered preview at desktop and mobile width, in sandboxed iframes.
        await page.click("#preview")
        mobile = page.locator("#preview-mobile")
        await expect(mobile).to_have_attribute("sandbox", "")
        await expect(page.frame_locator("#preview-mobile").get_by_text(f"{NEW_TEXT}, Alex")).to_be_visible()
        await expect(page.frame_locator("#preview-desktop").get_by_text("Button")).to_be_visible()
        assert (await mobile.bounding_box() or {}).get("width", 0) < 400
        shot = tmp_path / "editor-mobile-preview.png"
        await mobile.screenshot(path=str(shot))
        assert shot.read_bytes().startswith(b"\x89PNG")
        save_artifact(shot)
        await page.click("#preview-close")

        # A test mail through the gateway, rendered from the saved template.
        await page.fill("#test-to", "qa@example.org")
        await page.click("#send-test")
        await expect(page.locator("#status")).to_contain_text("Test queued for qa@example.org")
        (message,) = await asyncio.to_thread(smtp_sink.wait_for, 1, 60)
        assert message.rcpt_tos == ("qa@example.org",)
        html = message.message.get_body(("html",)).get_content()
        assert f"{NEW_TEXT}, Test" in spaced(html)


async def test_every_block_is_accepted_and_a_validation_error_is_shown(settings):
    button = {"tagName": "mj-button", "attributes": {"href": "https://example.org/"}, "content": "Buy now"}
    async with listening(settings) as service, browser_page() as page:
        template_id = await create_template(service.client, one_column(text("Offer"), button))
        await open_editor(page, service.url, template_id)
        results = await page.evaluate(EVERY_BLOCK)
        assert PALETTE <= set(results), results
        assert {name: r for name, r in results.items() if r != "ok"} == {}
        canvas = page.frame_locator("iframe.gjs-frame")
        await canvas.get_by_text("Buy now").click()
        await page.click(".gjs-pn-btn[title='Settings']")
        href = page.locator(".gjs-trt-trait", has=page.locator(".gjs-label[title='Href']")).locator("input")
        await expect(href).to_have_value("https://example.org/")
        await href.fill("javascript:alert(document.domain)")
        await href.press("Enter")

        await page.click("#save")
        errors = page.locator("#errors")
        await expect(errors).to_be_visible()
        await expect(errors).to_contain_text("Not saved")
        await expect(errors).to_contain_text("URL scheme 'javascript:' is not allowed")
        stored = (await service.client.get(f"/v1/templates/{template_id}", headers=AUTH)).json()
        assert stored["version_count"] == 1
        assert stored["design"]["children"][-1]["children"][0]["children"][0]["children"][1] == button

        # Someone else saves meanwhile: this page's save is refused (If-Match), not saved over theirs.
        theirs = await service.client.patch(
            f"/v1/templates/{template_id}", headers=AUTH, json={"subject": "Their subject"}
        )
        assert theirs.status_code == 200, theirs.text
        await href.fill("https://example.org/fixed")
        await href.press("Enter")
        await page.click("#save")
        await expect(errors).to_contain_text("someone else saved this template meanwhile")
        stored = (await service.client.get(f"/v1/templates/{template_id}", headers=AUTH)).json()
        assert (stored["version_count"], stored["subject"]) == (2, "Their subject")
        assert stored["design"]["children"][-1]["children"][0]["children"][0]["children"][1] == button
