"""Preview screenshots with Debian's headless Chromium."""

from __future__ import annotations

import asyncio

import pytest

from services.mass_mailer.templates.preview import (
    PreviewUnavailable,
    find_chromium,
    png_size,
    screenshots,
)
from services.mass_mailer.templates.render import render_design
from tests.mass_mailer.templates.helpers import newsletter

CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(find_chromium(CHROMIUM) is None, reason="Debian's chromium is not installed")
def test_screenshots_are_pngs_of_375_and_800_px():
    html = render_design(newsletter()).html
    shots = asyncio.run(screenshots(html, chromium=CHROMIUM, height=700))
    assert [(s.width, s.height) for s in shots] == [(375, 700), (800, 700)]
    assert all(png_size(s.png) == (s.width, s.height) for s in shots)
    assert shots[0].png != shots[1].png


def test_missing_chromium_is_a_clear_error(tmp_path):
    with pytest.raises(PreviewUnavailable, match="need headless Chromium"):
        asyncio.run(screenshots("<p>x</p>", chromium=str(tmp_path / "no-chromium"), height=300))
    with pytest.raises(ValueError):
        png_size(b"GIF89a....")


@pytest.mark.skipif(find_chromium(CHROMIUM) is None, reason="Debian's chromium is not installed")
def test_local_files_do_not_show_up_in_screenshots(tmp_path):
    from io import BytesIO

    from PIL import Image

    secret = tmp_path / "secret.png"
    Image.new("RGB", (50, 50), (255, 0, 0)).save(secret)
    html = (
        '<html><head></head><body style="margin:0;background:#ffffff">'
        f'<img src="{secret}" width="375" height="300" style="display:block"></body></html>'
    )
    shot = asyncio.run(screenshots(html, chromium=CHROMIUM, height=300, widths=(375,)))[0]
    pixel = Image.open(BytesIO(shot.png)).convert("RGB").getpixel((100, 100))
    assert pixel == (255, 255, 255)  # the red local file was not loaded
