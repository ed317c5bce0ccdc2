"""Installing the tool into a platform: LTI Dynamic Registration and Canvas's JSON config.

`GET /lti/registration` is opened by the platform (inside its admin UI) and answers HTML for
the admin: what happened, and on success the `org.imsglobal.lti.close` message to the
platform's window. `GET /lti/canvas.json` is the developer-key JSON of a manual install.
"""

from __future__ import annotations

from html import escape
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse

from app.api.deps import Context
from app.api.problems import ProblemError, problem_responses
from app.install import (
    MAX_PARAM_CHARS,
    Installed,
    InstallError,
    NotConfiguredError,
    check_invite,
    install_from_invite,
    tool_description,
)
from app.lti.tool import TOOL_SCOPES, canvas_developer_key_json

router = APIRouter(prefix="/lti", tags=["lti"])

CANVAS_WHERE = (
    "In Canvas: Admin → Developer Keys → + Developer Key → LTI Key → Dynamic Registration, "
    "paste this page's address and press Continue."
)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # The address holds the invite: never send it to another site.
    "Referrer-Policy": "no-referrer",
}
_CLOSE_SCRIPT = """<script>
function closeRegistration() {
  (window.opener || window.parent).postMessage({subject: "org.imsglobal.lti.close"}, "*");
}
</script>"""


def _page(title: str, body: str, *, status: int, close_now: bool = False) -> HTMLResponse:
    closing = "<script>closeRegistration();</script>" if close_now else ""
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)} · passback</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;"
        "padding:0 1rem;line-height:1.5}code{background:#eee;padding:0 .2em}"
        ".code{color:#666}</style>"
        f"{_CLOSE_SCRIPT}</head><body><h1>{escape(title)}</h1>{body}"
        '<p><button type="button" onclick="closeRegistration()">Close</button></p>'
        f"{closing}</body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def _error_page(status: int, code: str, message: str, remedy: str) -> HTMLResponse:
    body = (
        f"<p>{escape(message[:1].upper() + message[1:])}.</p>"
        f"<p><strong>What to do:</strong> {escape(remedy)}</p>"
        f'<p class="code">Error code: <code>{escape(code)}</code></p>'
    )
    return _page("The tool was not registered", body, status=status)


def _success_page(installed: Installed, tool_name: str) -> HTMLResponse:
    platform = installed.platform
    hosts = ", ".join(platform.allowed_hosts)
    granted = installed.client.scope
    missing = [] if granted is None else [s for s in TOOL_SCOPES if s not in granted.split()]
    warning = (
        "<p><strong>The platform did not grant</strong> "
        + ", ".join(f"<code>{escape(scope)}</code>" for scope in missing)
        + ": enable these scopes on the developer key, or grades cannot be sent or read back.</p>"
        if missing
        else ""
    )
    body = (
        f"<p>{escape(platform.label or platform.issuer)} now knows the tool, and passback "
        "knows the platform:</p><ul>"
        f"<li>issuer <code>{escape(platform.issuer)}</code></li>"
        f"<li>client_id <code>{escape(platform.client_id)}</code></li>"
        f"<li>deployment <code>{escape(', '.join(platform.deployment_ids))}</code></li>"
        f"<li>grades may go to <code>{escape(hosts)}</code></li></ul>"
        "<p>Next, in the platform: review the scopes (keep all four Assignment and Grade "
        "Services scopes), turn the developer key <strong>ON</strong>, and install the tool in "
        "an account or course.</p>"
        f"{warning}"
    )
    return _page(f"{tool_name} is registered", body, status=200, close_now=not missing)


def _present(value: str | None) -> str | None:
    return value.strip() if value is not None and value.strip() else None


@router.get(
    "/registration",
    response_class=HTMLResponse,
    # An HTML page for a platform admin, like the teacher page: not part of the JSON API.
    include_in_schema=False,
    summary="LTI Dynamic Registration (opened by the platform)",
    description="Opened by a platform's admin UI with `openid_configuration` and "
    "`registration_token` added to an invite link from `passback platforms invite`. Fetches "
    "the platform's OpenID configuration, registers the tool, records the platform "
    "registration and answers an HTML page that closes the platform's dialog "
    "(`org.imsglobal.lti.close`). Errors are HTML pages with a code and what to do.",
)
async def dynamic_registration(
    context: Context,
    invite: Annotated[
        str | None, Query(description="The invite from `passback platforms invite`.")
    ] = None,
    openid_configuration: Annotated[
        str | None, Query(description="Added by the platform: its OpenID configuration URL.")
    ] = None,
    registration_token: Annotated[
        str | None, Query(description="Added by the platform: the token to register with.")
    ] = None,
) -> HTMLResponse:
    invite = _present(invite)
    configuration_url = _present(openid_configuration)
    registration_token = _present(registration_token)
    too_long = [
        value
        for value in (invite, configuration_url, registration_token)
        if value is not None and len(value) > MAX_PARAM_CHARS
    ]
    if too_long:
        return _error_page(
            400,
            "invalid_request",
            "a parameter of this address is too long",
            "Paste the registration link exactly as the operator gave it.",
        )
    if invite is None:
        return _error_page(
            400,
            "invite_missing",
            "this address carries no registration invite",
            "Ask the operator of passback for a registration link (passback platforms invite).",
        )
    try:
        tool = tool_description(context.settings)
    except NotConfiguredError as exc:
        return _error_page(
            503,
            "not_configured",
            f"passback is not set up for registrations: {exc}",
            "Ask the operator of passback to finish its settings, then use the link again.",
        )
    now = context.clock()
    try:
        if configuration_url is None:
            expires_at = await check_invite(context.sessions, invite, now)
            return _page(
                "Paste this link into your platform",
                f"<p>This registration link is valid until {escape(expires_at.isoformat())}, "
                f"once. {escape(CANVAS_WHERE)}</p>",
                status=400,
            )
        installed = await install_from_invite(
            context.sessions,
            context.http,
            tool=tool,
            invite_token=invite,
            openid_configuration=configuration_url,
            registration_token=registration_token,
            insecure_hosts=context.settings.insecure_hosts,
            now=now,
        )
    except InstallError as exc:
        return _error_page(exc.status, exc.code, exc.message, exc.remedy)
    return _success_page(installed, tool.name)


@router.get(
    "/canvas.json",
    summary="Canvas developer-key JSON (manual install)",
    description="Paste into Canvas: Admin → Developer Keys → + Developer Key → LTI Key → "
    "Method: Paste JSON. 503 `not_configured` until the public and Formative URLs are set.",
    responses=problem_responses(503),
)
async def canvas_json(context: Context) -> JSONResponse:
    try:
        tool = tool_description(context.settings)
    except NotConfiguredError as exc:
        raise ProblemError(503, "not_configured", f"the tool's URLs are not set: {exc}") from exc
    document: dict[str, Any] = canvas_developer_key_json(tool)
    return JSONResponse(document)
