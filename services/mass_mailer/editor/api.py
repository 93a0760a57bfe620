"""HTTP side of the editor: the page and its built assets (public, no secrets in them) under
``/editor``, and the MJML conversion the page uses under ``/v1/editor`` (API key, templates:read).

The page asks for an API key, keeps it in the tab's sessionStorage and sends it as ``X-API-Key``
to the template API; the HTML and assets are the same for everyone and need no key.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from services.mass_mailer.editor.convert import MAX_MJML_CHARS, design_to_mjml, mjml_to_design
from services.mass_mailer.templates.content import DesignError
from shared.apikeys import require_scope
from shared.service import ServiceContext

STATIC = Path(__file__).parent / "static"
ASSETS = {
    "editor.js": "text/javascript; charset=utf-8",
    "editor.css": "text/css; charset=utf-8",
    "licenses.txt": "text/plain; charset=utf-8",
}
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        # GrapesJS styles its canvas and panels with style elements/attributes; no script runs inline.
        "style-src 'self' 'unsafe-inline'",
        # Images of the design (the marketer's https hosts) show in the canvas; they cannot run code.
        "img-src 'self' data: blob: https:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "frame-src 'self'",
        "child-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class DesignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    design: dict[str, Any] = Field(description="MJML-JSON design")


class MjmlOut(BaseModel):
    mjml: str


class MjmlIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mjml: Annotated[str, Field(max_length=MAX_MJML_CHARS)]


class DesignOut(BaseModel):
    design: dict[str, Any]


def _missing(path: Path) -> HTTPException:
    return HTTPException(
        503, f"the editor's built assets are missing from this installation ({path.name}); "
        "see services/mass_mailer/editor/frontend/README.md",
    )  # fmt: skip


def _page() -> FileResponse:
    if not (STATIC / "editor.html").is_file():
        raise _missing(STATIC / "editor.html")
    return FileResponse(
        STATIC / "editor.html",
        media_type="text/html; charset=utf-8",
        headers=SECURITY_HEADERS | {"Cache-Control": "no-store"},
    )


@cache
def _asset(name: str) -> tuple[bytes, bytes, str]:
    """An asset's bytes, gzipped bytes (the 2.4 MB bundle is 0.7 MB) and ETag, read once."""
    if not (STATIC / name).is_file():
        raise _missing(STATIC / name)
    raw = (STATIC / name).read_bytes()
    return raw, gzip.compress(raw, compresslevel=9, mtime=0), f'"{hashlib.sha256(raw).hexdigest()[:32]}"'


def routers(context: ServiceContext) -> list[APIRouter]:
    page = APIRouter(prefix="/editor", tags=["editor"], include_in_schema=False)

    @page.get("/new")
    async def new_template_page() -> FileResponse:
        return _page()

    @page.get("/static/{name}")
    async def asset(name: str, request: Request) -> Response:
        if name not in ASSETS:
            raise HTTPException(404, "no such asset")
        raw, packed, etag = _asset(name)
        headers = SECURITY_HEADERS | {"Cache-Control": "no-cache", "ETag": etag, "Vary": "Accept-Encoding"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(packed, media_type=ASSETS[name], headers=headers | {"Content-Encoding": "gzip"})
        return Response(raw, media_type=ASSETS[name], headers=headers)

    @page.get("/{template_id}")
    async def template_page(template_id: Annotated[int, PathParam(ge=1)]) -> FileResponse:
        return _page()

    api = APIRouter(
        prefix="/v1/editor", tags=["editor"], dependencies=[Depends(require_scope("templates:read"))]
    )

    @api.post("/to-mjml", summary="MJML-JSON design -> MJML text for the editor")
    async def to_mjml(body: DesignIn) -> MjmlOut:
        try:
            return MjmlOut(mjml=await asyncio.to_thread(design_to_mjml, body.design))
        except DesignError as exc:
            raise HTTPException(422, str(exc)) from exc

    @api.post("/from-mjml", summary="The editor's MJML text -> validated MJML-JSON design")
    async def from_mjml(body: MjmlIn) -> DesignOut:
        try:
            return DesignOut(design=await asyncio.to_thread(mjml_to_design, body.mjml))
        except DesignError as exc:
            raise HTTPException(422, str(exc)) from exc

    return [page, api]
