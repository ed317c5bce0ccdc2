"""The teacher's manual passback page, served by the service (not part of the JSON API).

The page is a shell: it holds no student data, so it needs no credentials. Its script reads
the teacher token from the address fragment (`…/passback#token=<JWT>`), which browsers never
send to a server, so the token stays out of every log; it then calls the JSON API with the
token as a bearer header.
"""

from __future__ import annotations

import html
from pathlib import Path
from string import Template

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from app.api.problems import ProblemError

router = APIRouter(include_in_schema=False)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC_FILES = {"passback.js": "text/javascript", "passback.css": "text/css"}
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _page_template() -> Template:
    return Template((WEB_DIR / "templates" / "passback.html").read_text(encoding="utf-8"))


@router.get("/teach/formatives/{formative_id}/passback", response_class=HTMLResponse)
async def passback_page(formative_id: str) -> HTMLResponse:
    page = _page_template().substitute(formative_id=html.escape(formative_id, quote=True))
    return HTMLResponse(page, headers=PAGE_HEADERS)


@router.get("/teach/static/{name}")
async def static_file(name: str) -> FileResponse:
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise ProblemError(404, "not_found", f"no static file {name!r}")
    return FileResponse(
        WEB_DIR / "static" / name,
        media_type=media_type,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )
