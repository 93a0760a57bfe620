"""Renderer parity helpers: the official npm renderer and a DOM similarity measure."""

from __future__ import annotations

import difflib
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

NODE_DIR = Path(__file__).parent / "mjml-node"
CACHE_DIR = Path.home() / ".cache" / "mailsvc" / "mjml-node"
CORPUS = Path(__file__).resolve().parents[3].parent / "shared" / "corpus" / "mjml-templates"
REAL_SETS = ("mjmlio-email-templates", "recontentapp", "easy-email-pro")


def install_official() -> Path | str:
    """npm mjml@4.18.0 in the cache dir (``npm ci`` from the committed lock); reason on failure."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not installed"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    lock = (NODE_DIR / "package-lock.json").read_bytes()
    stamp = CACHE_DIR / "installed.lock"
    for name in ("package.json", "package-lock.json", "render.js"):
        shutil.copyfile(NODE_DIR / name, CACHE_DIR / name)
    if not (stamp.exists() and stamp.read_bytes() == lock and (CACHE_DIR / "node_modules" / "mjml").is_dir()):
        proc = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--silent", "--fetch-retries=1", "--fetch-timeout=60000"],
            cwd=CACHE_DIR, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            return f"npm ci failed (registry unreachable?): {proc.stderr.strip()[-300:]}"
        stamp.write_bytes(lock)
    return CACHE_DIR


def render_official(node_dir: Path, files: list[Path]) -> dict[str, str | dict]:
    proc = subprocess.run(
        ["node", str(node_dir / "render.js"), *map(str, files)],
        capture_output=True, text=True, timeout=600, check=True, cwd=node_dir,
    )  # fmt: skip
    return json.loads(proc.stdout)


_CONDITIONAL = re.compile(r"^\[(if [^\]]*)\]>(.*?)(<!\[endif\])?$", re.S)


class _Tokens(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tokens: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tokens.append(f"<{tag}>")
        for name, value in sorted(attrs):
            if name == "style":
                value = ";".join(sorted(d.strip() for d in (value or "").split(";") if d.strip()))
            if name not in ("class", "id") and not (name == "class" and not value):
                self.tokens.append(f"@{name}={' '.join((value or '').split())}")

    def handle_endtag(self, tag: str) -> None:
        self.tokens.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        if text:
            self.tokens.append(text)

    def handle_comment(self, data: str) -> None:
        # Outlook conditionals hold markup: compare it as markup, not as one opaque string.
        match = _CONDITIONAL.match(data.strip())
        if match:
            self.tokens.append(f"<!--[{' '.join(match.group(1).split())}]")
            self.tokens.extend(dom_tokens(match.group(2)))
            self.tokens.append("<![endif]-->")
            return
        text = " ".join(data.split())
        if text:
            self.tokens.append(f"<!--{text}-->")


def dom_tokens(html: str) -> list[str]:
    """Normalised tag/attribute/text sequence (whitespace collapsed; generated class/id names
    dropped, since both renderers make up their own)."""
    parser = _Tokens()
    parser.feed(re.sub(r"\s+", " ", html))
    parser.close()
    return parser.tokens


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, dom_tokens(a), dom_tokens(b), autojunk=False).ratio()


def strip_unknown_attributes(design: dict) -> list[str]:
    """Drop attributes outside the allowlist (npm mjml ignores them too, with a warning)."""
    from services.mass_mailer.templates.design import allowed_attributes

    table, removed = allowed_attributes(), []

    def walk(node: dict, parent: str | None) -> None:
        allowed = table.get(node["tagName"], {})
        for name in list(node.get("attributes", {})):
            if name not in allowed:
                removed.append(f"{node['tagName']}@{name}")
                del node["attributes"][name]
        for child in node.get("children", []):
            walk(child, node["tagName"])

    walk(design, None)
    return removed
