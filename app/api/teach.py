"""The teacher's manual passback page, served by the service (not part of the JSON API).

The page is a shell: it holds no student data, so it needs no credentials. Its script reads
the teacher token from the address fragment (`…/passback#token=<JWT>`), which browsers never
send to a server, so the token stays out of every log; it then calls the JSON API with the
token as a bearer header.

The page is a Jinja2 template (autoescaped: the formative id in the path is untrusted); its
script and stylesheet are served by `StaticFiles` under `STATIC_PATH`.
"""

from __future__ import annotations

import os
from os import PathLike
from pathlib import Path

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Scope

router = APIRouter(include_in_schema=False)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC_PATH = "/teach/static"
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
ASSET_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(WEB_DIR / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
)


class WebAssets(StaticFiles):
    """The page's script and stylesheet; revalidated on every load (ETag), never sniffed."""

    def file_response(
        self,
        full_path: PathLike[str] | str,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(ASSET_HEADERS)
        return response


def web_assets() -> WebAssets:
    """Mount this at `STATIC_PATH` (a mount cannot travel inside an APIRouter)."""
    return WebAssets(directory=WEB_DIR / "static")


@router.get("/teach/formatives/{formative_id}/passback", response_class=HTMLResponse)
async def passback_page(request: Request, formative_id: str) -> Response:
    return templates.TemplateResponse(
        request,
        "passback.html",
        {"formative_id": formative_id, "static": STATIC_PATH},
        headers=PAGE_HEADERS,
    )
