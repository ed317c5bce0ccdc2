"""LTI Dynamic Registration 1.0, the tool's side: read the platform's OpenID configuration,
register the tool at its registration endpoint, and read back what the platform made.

    configuration = await fetch_platform_configuration(http, url, token, insecure_hosts=...)
    client = await register_tool(http, configuration, token, body, insecure_hosts=...)

Every outbound URL passes the SSRF guard (https, no loopback or private address unless the
host is an insecure host of the settings); answers are read up to a size cap. Failures are
`DynamicRegistrationError` with a stable `code`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.lti.tool import TOOL_CONFIGURATION_CLAIM
from app.lti.urls import UnsafeUrlError, check_outbound_url, host_of

PLATFORM_CONFIGURATION_CLAIM = "https://purl.imsglobal.org/spec/lti-platform-configuration"
CANVAS_ACCOUNT_NAME = "https://canvas.instructure.com/lti/account_name"
CANVAS_FAMILY_CODE = "canvas"
CANVAS_CLOUD_ISSUER_HOSTS = frozenset(
    {"canvas.instructure.com", "canvas.beta.instructure.com", "canvas.test.instructure.com"}
)
CANVAS_CLOUD_HOSTS = "*.instructure.com"
"""Instructure-hosted schools (`school.instructure.com`) answer AGS calls of the cloud issuers."""
MAX_ANSWER_BYTES = 256 * 1024
MAX_MESSAGE_CHARS = 500
MAX_FIELD_CHARS = 2048


class DynamicRegistrationError(Exception):
    """The registration cannot go on; `code` is stable, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PlatformConfiguration:
    """What the tool needs of the platform's OpenID configuration."""

    issuer: str
    token_endpoint: str
    jwks_uri: str
    registration_endpoint: str
    authorization_endpoint: str | None
    product_family_code: str | None
    account_name: str | None

    @property
    def is_canvas(self) -> bool:
        return self.product_family_code == CANVAS_FAMILY_CODE

    def allowed_hosts(self) -> list[str]:
        """Hosts the registration may send tokens and scores to: those of the platform's own
        endpoints, and every Instructure-hosted school for Canvas Cloud's issuers."""
        urls = (self.issuer, self.token_endpoint, self.jwks_uri, self.authorization_endpoint)
        hosts = list(dict.fromkeys(host_of(url) for url in urls if url))
        if self.is_canvas and (urlsplit(self.issuer).hostname or "") in CANVAS_CLOUD_ISSUER_HOSTS:
            hosts.append(CANVAS_CLOUD_HOSTS)
        return hosts


@dataclass(frozen=True)
class RegisteredClient:
    client_id: str
    deployment_id: str | None
    scope: str | None


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def _guard(url: str, what: str, insecure_hosts: Iterable[str]) -> None:
    try:
        check_outbound_url(url, allowed_hosts=[host_of(url)], insecure_hosts=insecure_hosts)
    except (UnsafeUrlError, ValueError) as exc:
        code = exc.code if isinstance(exc, UnsafeUrlError) else "invalid_url"
        raise DynamicRegistrationError(
            "platform_url_refused", f"the platform's {what} {url!r} is refused ({code}): {exc}"
        ) from exc


def _text_field(document: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = document.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD_CHARS:
        raise DynamicRegistrationError(
            "platform_configuration_invalid",
            f"the platform's OpenID configuration has no usable {name!r}",
        )
    return value


def parse_platform_configuration(document: object, configuration_url: str) -> PlatformConfiguration:
    """Check an OpenID configuration document; its `issuer` must have the origin of the URL it
    was fetched from (LTI DR 1.0 §3.4.1), so a platform cannot speak for another."""
    if not isinstance(document, dict):
        raise DynamicRegistrationError(
            "platform_configuration_invalid",
            "the platform's OpenID configuration is not a JSON object",
        )
    issuer = _text_field(document, "issuer")
    assert issuer is not None
    if _origin(issuer) != _origin(configuration_url):
        raise DynamicRegistrationError(
            "issuer_mismatch",
            f"the platform's issuer {issuer!r} does not match the address its configuration "
            f"came from ({configuration_url!r})",
        )
    platform = document.get(PLATFORM_CONFIGURATION_CLAIM)
    platform = platform if isinstance(platform, dict) else {}
    family = platform.get("product_family_code")
    account_name = platform.get(CANVAS_ACCOUNT_NAME)
    token_endpoint = _text_field(document, "token_endpoint")
    jwks_uri = _text_field(document, "jwks_uri")
    registration_endpoint = _text_field(document, "registration_endpoint")
    assert token_endpoint is not None and jwks_uri is not None
    assert registration_endpoint is not None
    return PlatformConfiguration(
        issuer=issuer,
        token_endpoint=token_endpoint,
        jwks_uri=jwks_uri,
        registration_endpoint=registration_endpoint,
        authorization_endpoint=_text_field(document, "authorization_endpoint", required=False),
        product_family_code=family if isinstance(family, str) else None,
        account_name=account_name[:200] if isinstance(account_name, str) else None,
    )


async def _read_json(response: httpx.Response, what: str) -> object:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise DynamicRegistrationError(
                "platform_answer_invalid",
                f"the platform's {what} is larger than {MAX_ANSWER_BYTES} bytes",
            )
    try:
        return json.loads(body)
    except ValueError as exc:
        if response.is_success:
            raise DynamicRegistrationError(
                "platform_answer_invalid", f"the platform's {what} is not JSON"
            ) from exc
        return bytes(body).decode("utf-8", "replace")


def _platform_message(answer: object) -> str:
    """The platform's own words from an error answer, shortened."""
    if isinstance(answer, dict):
        for name in ("errorMessage", "error_description", "error", "errors", "message"):
            if name in answer:
                value = answer[name]
                text = value if isinstance(value, str) else json.dumps(value)
                return text[:MAX_MESSAGE_CHARS]
        return json.dumps(answer)[:MAX_MESSAGE_CHARS]
    return str(answer)[:MAX_MESSAGE_CHARS]


def _describe(exc: httpx.HTTPError) -> str:
    """A transport error in a few words (a refused private address says so)."""
    detail = str(exc).strip()
    return f"{type(exc).__name__}: {detail[:200]}" if detail else type(exc).__name__


def _headers(registration_token: str | None) -> dict[str, str]:
    """The registration token is optional in LTI DR 1.0 (Canvas always sends one)."""
    headers = {"Accept": "application/json"}
    if registration_token is not None:
        headers["Authorization"] = f"Bearer {registration_token}"
    return headers


async def fetch_platform_configuration(
    http: httpx.AsyncClient,
    configuration_url: str,
    registration_token: str | None,
    *,
    insecure_hosts: Iterable[str],
) -> PlatformConfiguration:
    """GET the platform's OpenID configuration (the registration token, if any, as bearer)."""
    _guard(configuration_url, "configuration URL", insecure_hosts)
    headers = _headers(registration_token)
    try:
        async with http.stream("GET", configuration_url, headers=headers) as response:
            answer = await _read_json(response, "OpenID configuration")
            status = response.status_code
    except httpx.HTTPError as exc:
        raise DynamicRegistrationError(
            "platform_unreachable",
            f"the platform's configuration could not be fetched: {_describe(exc)}",
        ) from exc
    if not 200 <= status < 300:
        raise DynamicRegistrationError(
            "platform_configuration_refused",
            f"the platform answered {status} for its configuration: {_platform_message(answer)}",
        )
    configuration = parse_platform_configuration(answer, configuration_url)
    for url, what in (
        (configuration.registration_endpoint, "registration endpoint"),
        (configuration.token_endpoint, "token endpoint"),
        (configuration.jwks_uri, "JWKS URL"),
    ):
        _guard(url, what, insecure_hosts)
    return configuration


def _deployment_of(answer: dict[str, Any]) -> str | None:
    """Canvas answers `deployment_id` at the top level; the IMS spec puts it in the tool
    configuration claim."""
    claim = answer.get(TOOL_CONFIGURATION_CLAIM)
    candidates = [answer.get("deployment_id")]
    if isinstance(claim, dict):
        candidates.append(claim.get("deployment_id"))
    for value in candidates:
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()[:512]
    return None


def parse_registration_answer(answer: object) -> RegisteredClient:
    if not isinstance(answer, dict):
        raise DynamicRegistrationError(
            "platform_answer_invalid", "the platform's registration answer is not a JSON object"
        )
    client_id = answer.get("client_id")
    if isinstance(client_id, int) and not isinstance(client_id, bool):
        client_id = str(client_id)
    if not isinstance(client_id, str) or not client_id.strip() or len(client_id) > 255:
        raise DynamicRegistrationError(
            "platform_answer_invalid", "the platform's registration answer has no client_id"
        )
    scope = answer.get("scope")
    return RegisteredClient(
        client_id=client_id.strip(),
        deployment_id=_deployment_of(answer),
        scope=scope if isinstance(scope, str) else None,
    )


async def register_tool(
    http: httpx.AsyncClient,
    configuration: PlatformConfiguration,
    registration_token: str | None,
    body: dict[str, Any],
    *,
    insecure_hosts: Iterable[str],
) -> RegisteredClient:
    """POST the tool's registration; returns the client the platform made."""
    url = configuration.registration_endpoint
    _guard(url, "registration endpoint", insecure_hosts)
    headers = _headers(registration_token)
    try:
        async with http.stream("POST", url, json=body, headers=headers) as response:
            answer = await _read_json(response, "registration answer")
            status = response.status_code
    except httpx.HTTPError as exc:
        raise DynamicRegistrationError(
            "platform_unreachable",
            f"the platform's registration endpoint could not be reached: {_describe(exc)}",
        ) from exc
    if not 200 <= status < 300:
        raise DynamicRegistrationError(
            "platform_refused_registration",
            f"the platform answered {status} to the registration: {_platform_message(answer)}",
        )
    return parse_registration_answer(answer)
