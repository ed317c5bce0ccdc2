"""LTI Dynamic Registration, the platform's side, as Canvas does it.

An admin starts a registration (`POST /sandbox/admin/registrations` with the tool's
registration URL, or the page `/sandbox/registration?tool_url=…`): the platform makes a
registration token (one hour, single use) and opens the tool's URL with
`openid_configuration` and `registration_token` added. The tool reads the OpenID
configuration (`/api/lti/security/openid-configuration`, the token as bearer or in the
query) and POSTs its registration to `/api/lti/registrations`, which checks the token and
the body like Canvas (422 `{"errors": {...}}`, 401 `{"errorMessage"}`) and makes a developer
key whose tool key is at the registered `jwks_uri`, installed in the root account under one
deployment id that every course then sees.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field
from starlette.responses import HTMLResponse, Response

from app.sandbox.models import RegistrationToken, ToolRegistration
from app.sandbox.protocol import (
    AGS_SCOPES,
    AUTHORIZE_PATH,
    EXT_ACCOUNT_NAME,
    EXT_PRIVACY_LEVEL,
    OPENID_CONFIGURATION_PATH,
    PLATFORM_CONFIGURATION_CLAIM,
    REGISTRATIONS_PATH,
    TOOL_CONFIGURATION_CLAIM,
)
from app.sandbox.rendering import canvas_json
from app.sandbox.state import SandboxState
from app.sandbox.urls import platform_jwks_url, request_origin, token_url

REGISTRATION_TOKEN_LIFETIME = timedelta(hours=1)
ACCOUNT_NAME = "Sandbox University"
PRIVACY_LEVELS = ("public", "name_only", "email_only", "anonymous")
MESSAGE_TYPES = ("LtiResourceLinkRequest", "LtiDeepLinkingRequest")
RESOURCE_LINK_PLACEMENTS = ("course_navigation", "assignment_edit", "link_selection")
DEEP_LINKING_PLACEMENTS = ("assignment_selection", "link_selection", "editor_button")
LAUNCH_CLAIMS = ("sub", "iss", "name", "given_name", "family_name", "email", "locale")


class RegistrationError(Exception):
    """A refused registration call: Canvas's answer for it."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body

    def response(self) -> Response:
        return canvas_json(self.body, status=self.status)


def _unauthorized(message: str) -> RegistrationError:
    return RegistrationError(401, {"errorMessage": message})


def start_registration(
    state: SandboxState,
    *,
    issuer: str | None = None,
    scopes_supported: Sequence[str] | None = None,
    scopes_granted: Sequence[str] | None = None,
) -> RegistrationToken:
    """A registration token for one Dynamic Registration (what the admin's session holds)."""
    with state.lock:
        token = RegistrationToken(
            token=secrets.token_urlsafe(24),
            expires_at=state.clock() + REGISTRATION_TOKEN_LIFETIME,
            issuer=issuer,
            scopes_supported=None if scopes_supported is None else tuple(scopes_supported),
            scopes_granted=None if scopes_granted is None else tuple(scopes_granted),
        )
        state.registration_tokens[token.token] = token
        return token


def openid_configuration_url(origin: str, token: RegistrationToken) -> str:
    return f"{origin}{OPENID_CONFIGURATION_PATH}?{urlencode({'registration_token': token.token})}"


def initiation_url(tool_url: str, origin: str, token: RegistrationToken) -> str:
    """The tool's registration URL with the two parameters the platform adds."""
    added = urlencode(
        {
            "openid_configuration": openid_configuration_url(origin, token),
            "registration_token": token.token,
        }
    )
    return f"{tool_url}{'&' if '?' in tool_url else '?'}{added}"


def _bearer(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    if authorization.startswith("Bearer "):
        return authorization[len("Bearer ") :].strip() or None
    return None


def _live_token(state: SandboxState, presented: str | None) -> RegistrationToken:
    """The registration token presented, if it can still be used (call under the lock)."""
    if presented is None:
        raise _unauthorized("Missing registration token")
    token = state.registration_tokens.get(presented)
    if token is None:
        raise _unauthorized("JWT did not include expected contents")
    if token.expires_at <= state.clock():
        raise _unauthorized("The registration token has expired")
    if token.client_id is not None:
        raise _unauthorized("The registration token was already used")
    return token


def platform_configuration(
    state: SandboxState, origin: str, presented: str | None
) -> dict[str, Any]:
    with state.lock:
        token = _live_token(state, presented)
        issuer = token.issuer or state.issuer
        scopes = list(token.scopes_supported or AGS_SCOPES)
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{origin}{AUTHORIZE_PATH}",
        "registration_endpoint": f"{origin}{REGISTRATIONS_PATH}",
        "jwks_uri": platform_jwks_url(origin),
        "token_endpoint": token_url(origin),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
        "scopes_supported": scopes,
        "response_types_supported": ["id_token"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": list(LAUNCH_CLAIMS),
        "subject_types_supported": ["public"],
        "authorization_server": urlsplit(origin).netloc,
        PLATFORM_CONFIGURATION_CLAIM: {
            "product_family_code": "canvas",
            "version": "sandbox",
            "messages_supported": [
                {"type": "LtiResourceLinkRequest", "placements": list(RESOURCE_LINK_PLACEMENTS)},
                {"type": "LtiDeepLinkingRequest", "placements": list(DEEP_LINKING_PLACEMENTS)},
            ],
            EXT_ACCOUNT_NAME: ACCOUNT_NAME,
        },
    }


def _is_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _configuration_errors(configuration: object) -> list[str]:
    if not isinstance(configuration, dict):
        return ["must be an object"]
    errors = []
    if not isinstance(configuration.get("domain"), str) or not configuration["domain"]:
        errors.append("domain is required")
    if not _is_url(configuration.get("target_link_uri")):
        errors.append("target_link_uri must be a URL")
    claims = configuration.get("claims")
    if not isinstance(claims, list) or not all(isinstance(claim, str) for claim in claims):
        errors.append("claims must be a list of strings")
    messages = configuration.get("messages")
    if not isinstance(messages, list):
        errors.append("messages must be a list")
    else:
        for message in messages:
            if not isinstance(message, dict) or message.get("type") not in MESSAGE_TYPES:
                errors.append(f"messages: type must be one of {', '.join(MESSAGE_TYPES)}")
    privacy = configuration.get(EXT_PRIVACY_LEVEL)
    if privacy is not None and privacy not in PRIVACY_LEVELS:
        errors.append(f"privacy_level must be one of {', '.join(PRIVACY_LEVELS)}")
    return errors


def registration_errors(body: object, scopes_supported: Sequence[str]) -> dict[str, list[str]]:
    """Canvas's checks of a registration request; empty when it may be created."""
    if not isinstance(body, dict):
        return {"body": ["must be a JSON object"]}
    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    if body.get("application_type") != "web":
        add("application_type", "Must be 'web'")
    grant_types = body.get("grant_types")
    if not isinstance(grant_types, list) or {"client_credentials", "implicit"} - set(grant_types):
        add("grant_types", "Must include client_credentials, implicit")
    response_types = body.get("response_types")
    if not isinstance(response_types, list) or "id_token" not in response_types:
        add("response_types", "Must include id_token")
    if body.get("token_endpoint_auth_method") != "private_key_jwt":
        add("token_endpoint_auth_method", "Must be 'private_key_jwt'")
    for field in ("initiate_login_uri", "jwks_uri"):
        if not _is_url(body.get(field)):
            add(field, "must be a URL")
    redirect_uris = body.get("redirect_uris")
    if not isinstance(redirect_uris, list) or not redirect_uris:
        add("redirect_uris", "can't be blank")
    elif not all(_is_url(uri) for uri in redirect_uris):
        add("redirect_uris", "Must only contain valid URIs")
    if not isinstance(body.get("client_name"), str) or not body["client_name"].strip():
        add("client_name", "can't be blank")
    scope = body.get("scope", "")
    requested = scope.split() if isinstance(scope, str) else []
    invalid = [name for name in requested if name not in scopes_supported]
    if not requested:
        add("scopes", "can't be blank")
    elif invalid:
        add("scopes", f"Invalid scopes: {', '.join(invalid)}")
    for message in _configuration_errors(body.get(TOOL_CONFIGURATION_CLAIM)):
        add("lti_tool_configuration", message)
    return errors


def create_registration(
    state: SandboxState, presented: str | None, body: object
) -> tuple[ToolRegistration, dict[str, Any]]:
    """Check the token and body, make the developer key and its root-account deployment."""
    with state.lock:
        token = _live_token(state, presented)
        errors = registration_errors(body, token.scopes_supported or AGS_SCOPES)
        if errors:
            raise RegistrationError(422, {"errors": errors})
        assert isinstance(body, dict)
        requested = body["scope"].split()
        granted = [
            scope
            for scope in requested
            if token.scopes_granted is None or scope in token.scopes_granted
        ]
        key = state.create_developer_key(
            name=body["client_name"].strip(),
            scopes=granted,
            public_jwk_url=body["jwks_uri"],
        )
        key.account_deployment_id = f"{state.next_id()}:{uuid.uuid4().hex}"
        token.client_id = key.client_id
        registration = ToolRegistration(
            client_id=key.client_id,
            deployment_id=key.account_deployment_id,
            body=dict(body),
            created_at=state.clock(),
        )
        state.tool_registrations[key.client_id] = registration
    answer = {
        name: body[name]
        for name in (
            "application_type",
            "grant_types",
            "initiate_login_uri",
            "redirect_uris",
            "response_types",
            "client_name",
            "jwks_uri",
            "token_endpoint_auth_method",
            "scope",
            TOOL_CONFIGURATION_CLAIM,
        )
    }
    return registration, {
        "client_id": registration.client_id,
        **answer,
        "scope": " ".join(granted),
        "deployment_id": registration.deployment_id,
    }


def registration_view(registration: ToolRegistration) -> dict[str, Any]:
    return {
        "client_id": registration.client_id,
        "deployment_id": registration.deployment_id,
        "created_at": registration.created_at.isoformat(),
        "body": registration.body,
    }


class RegistrationStart(BaseModel):
    tool_url: str = Field(description="The tool's Dynamic Registration URL (its invite link).")
    issuer: str | None = Field(
        default=None, description="Issuer the OpenID configuration names (default: this one)."
    )
    scopes_supported: list[str] | None = Field(
        default=None, description="Scopes the platform offers (default: every AGS scope)."
    )
    scopes_granted: list[str] | None = Field(
        default=None,
        description="Scopes the key gets of those the tool asks for (default: all it asks for).",
    )


def _started(state: SandboxState, origin: str, body: RegistrationStart) -> dict[str, Any]:
    if not _is_url(body.tool_url):
        raise HTTPException(422, "tool_url must be an absolute http(s) URL")
    token = start_registration(
        state,
        issuer=body.issuer,
        scopes_supported=body.scopes_supported,
        scopes_granted=body.scopes_granted,
    )
    return {
        "registration_token": token.token,
        "openid_configuration": openid_configuration_url(origin, token),
        "initiation_url": initiation_url(body.tool_url, origin, token),
        "expires_at": token.expires_at.isoformat(),
    }


def _expiry(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _start_page(initiation: str, expires_at: datetime) -> HTMLResponse:
    """What Canvas shows: the tool's registration page in a frame, closed by its message."""
    html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Dynamic Registration · sandbox</title>
<style>body{{font-family:system-ui,sans-serif;margin:1rem}}
iframe{{width:100%;height:70vh;border:1px solid #ccc}}</style></head><body>
<h1>Dynamic Registration</h1>
<p id="status">The tool's registration page (token valid until {escape(_expiry(expires_at))}):</p>
<iframe id="tool" src="{escape(initiation)}"></iframe>
<script>
window.addEventListener("message", function (event) {{
  if (event.data && event.data.subject === "org.imsglobal.lti.close") {{
    document.getElementById("tool").remove();
    document.getElementById("status").textContent =
      "The tool closed the registration. Its developer key is listed by the admin API.";
  }}
}});
</script></body></html>"""
    return HTMLResponse(html)


def build_registration_router(state: SandboxState) -> APIRouter:
    router = APIRouter(tags=["dynamic registration"])

    @router.get(OPENID_CONFIGURATION_PATH, summary="OpenID configuration (registration token)")
    async def openid_configuration(
        request: Request, registration_token: str | None = None
    ) -> Response:
        presented = _bearer(request) or registration_token
        try:
            document = platform_configuration(state, request_origin(request), presented)
        except RegistrationError as exc:
            return exc.response()
        return canvas_json(document)

    @router.post(REGISTRATIONS_PATH, summary="Create a Dynamic Registration")
    async def create(request: Request) -> Response:
        try:
            body: object = await request.json()
        except ValueError:
            body = None
        try:
            _, answer = create_registration(state, _bearer(request), body)
        except RegistrationError as exc:
            return exc.response()
        return canvas_json(answer)

    @router.post(
        "/sandbox/admin/registrations",
        status_code=201,
        summary="Start a Dynamic Registration: the tool URL to open, with its token",
    )
    async def start(body: RegistrationStart, request: Request) -> dict[str, Any]:
        return _started(state, request_origin(request), body)

    @router.get("/sandbox/admin/registrations/{client_id}", summary="What a tool registered")
    async def read(client_id: str) -> dict[str, Any]:
        with state.lock:
            registration = state.tool_registrations.get(client_id)
            if registration is None:
                raise HTTPException(404, f"unknown registration {client_id}")
            return registration_view(registration)

    @router.get(
        "/sandbox/registration",
        response_class=HTMLResponse,
        summary="An admin's Dynamic Registration page: opens the tool's URL in a frame",
    )
    async def page(tool_url: str, request: Request) -> HTMLResponse:
        started = _started(state, request_origin(request), RegistrationStart(tool_url=tool_url))
        with state.lock:
            token = state.registration_tokens[started["registration_token"]]
        return _start_page(started["initiation_url"], token.expires_at)

    return router
