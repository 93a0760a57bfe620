"""PNG screenshots of a rendered mail with Debian's headless Chromium.

The page is loaded from a private temporary folder; all network requests go to a dead proxy
(including loopback), so a hostile template cannot make the server fetch anything.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

PREVIEW_WIDTHS = (375, 800)
# Relative URLs must not resolve to local files (the page is opened from disk), and nothing but
# images, styles and fonts may load at all.
_HARDENING = (
    '<base href="https://preview.invalid/">'
    '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
    "img-src https: http: data:; style-src 'unsafe-inline' https: http:; font-src https: http:\">"
)


def harden(html: str) -> str:
    """The page as Chromium gets it: a remote base URL and a strict CSP first in <head>."""
    lower = html.lower()
    at = lower.find("<head>")
    if at >= 0:
        return html[: at + 6] + _HARDENING + html[at + 6 :]
    return f"<head>{_HARDENING}</head>{html}"


class PreviewUnavailable(RuntimeError):
    """Chromium is missing or failed; the API answers 503."""


@dataclass(frozen=True)
class Screenshot:
    width: int
    height: int
    png: bytes


def png_size(data: bytes) -> tuple[int, int]:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def find_chromium(configured: str) -> str | None:
    path = Path(configured)
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    return shutil.which(configured)


async def _shoot(chromium: str, page: Path, out: Path, width: int, height: int, timeout_s: float) -> bytes:
    profile = out.parent / f"profile-{width}"
    args = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
        "--disable-extensions", "--mute-audio", f"--user-data-dir={profile}",
        "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
        f"--screenshot={out}", f"--window-size={width},{height}", page.as_uri(),
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
    except TimeoutError as exc:
        process.kill()
        await process.wait()
        raise PreviewUnavailable(f"Chromium took longer than {timeout_s:g} s") from exc
    if not out.exists():
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:] if stderr else []
        raise PreviewUnavailable(f"Chromium made no screenshot (exit {process.returncode}) {' '.join(tail)}")
    return out.read_bytes()


async def screenshots(
    html: str,
    *,
    chromium: str,
    height: int,
    widths: tuple[int, ...] = PREVIEW_WIDTHS,
    timeout_s: float = 60.0,
) -> list[Screenshot]:
    """One PNG per width (``height`` px tall, the top of the mail)."""
    binary = find_chromium(chromium)
    if binary is None:
        raise PreviewUnavailable(
            f"preview screenshots need headless Chromium ('{chromium}' not found; apt-get install chromium)"
        )
    with tempfile.TemporaryDirectory(prefix="mailsvc-preview-") as folder:
        page = Path(folder) / "mail.html"
        page.write_text(harden(html), encoding="utf-8")
        images = await asyncio.gather(
            *(_shoot(binary, page, Path(folder) / f"shot-{w}.png", w, height, timeout_s) for w in widths)
        )
    shots = []
    for data in images:
        width, shot_height = png_size(data)
        shots.append(Screenshot(width=width, height=shot_height, png=data))
    return shots
