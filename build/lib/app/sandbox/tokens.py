"""The OAuth2 token endpoint: client_credentials with a JWT client assertion (§5).

Order of evaluation (canvas-ags.md §5.2): grant type → developer key from the assertion's
unverified ``sub`` (401 invalid_client) → signature and claims (400 invalid_request with the
validator's messages joined by ``" | "``) → scopes (400 invalid_scope). The tool's key is
inline on the developer key or fetched from its JWKS URL on every request, uncached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, Request
from starlette.responses import Response

from app.sandbox.access_tokens import issue_access_token
from app.sandbox.errors import PlatformError
from app.sandbox.jose import CompactJws, JoseError, parse_compact, rsa_public_key_from_jwk
from app.sandbox.jose import verify_rs256 as rs256_valid
from app.sandbox.params import read_params
from app.sandbox.protocol import ASSERTION_TYPE_JWT_BEARER, TOKEN_PATH
from app.sandbox.rendering import canvas_json
from app.sandbox.state import SandboxState
from app.sandbox.urls import request_origin, token_url

REQUIRED_ASSERTION_CLAIMS = ("sub", "aud", "exp", "iat", "jti", "iss")
MAX_ASSERTION_AGE_SECONDS = 300
MAX_ASSERTION_SKEW_SECONDS = 30
SIGNATURE_INVALID = "JWS signature invalid."
SCOPE_ERROR = (
    "A requested scope is invalid, unknown, malformed, or exceeds the scope granted by the "
    "resource owner. The following scopes were requested, but not granted: "
)


class TokenError(PlatformError):
    """An OAuth2 error answer: ``{"error", "error_description"}``."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def response(self) -> Response:
        headers = {"WWW-Authenticate": "Canvas OAuth 2.0"} if self.status == 401 else {}
        body = {"error": self.error, "error_description": self.description}
        return canvas_json(body, status=self.status, headers=headers)


def unknown_client() -> TokenError:
    return TokenError(401, "invalid_client", "unknown client")


def invalid_request(description: str) -> TokenError:
    return TokenError(400, "invalid_request", description)


def to_sentence(words: Sequence[str]) -> str:
    """Rails' Array#to_sentence: ``a``, ``a and b``, ``a, b, and c``."""
    if len(words) <= 2:
        return " and ".join(words)
    return f"{', '.join(words[:-1])}, and {words[-1]}"


def requested_scopes(params: dict[str, Any]) -> list[str]:
    raw = params.get("scope", params.get("scopes"))
    if isinstance(raw, list):
        return [str(scope) for scope in raw]
    return str(raw).split() if raw is not None else []


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def assertion_claim_errors(
    claims: dict[str, Any], audiences: Collection[str], now: float
) -> list[str]:
    """Canvas's JwtValidator in full-errors mode (canvas-ags.md §5.1)."""
    missing = [name for name in REQUIRED_ASSERTION_CLAIMS if claims.get(name) in (None, "")]
    errors = []
    if missing:
        errors.append(f"the following assertions are missing: {','.join(missing)}")
    if "aud" not in missing:
        aud = claims["aud"]
        named = aud if isinstance(aud, list) else [aud]
        if not any(isinstance(name, str) and name in audiences for name in named):
            errors.append("the 'aud' is invalid")
    if "exp" not in missing:
        exp = claims["exp"]
        if not _is_number(exp):
            errors.append("the 'exp' must be a number")
        elif exp < now:
            errors.append("the JWT has expired")
    if "iat" not in missing:
        iat = claims["iat"]
        if not _is_number(iat):
            errors.append("the 'iat' must be a number")
        elif iat < now - MAX_ASSERTION_AGE_SECONDS:
            errors.append(f"the 'iat' must be less than {MAX_ASSERTION_AGE_SECONDS} seconds old")
        elif iat > now + MAX_ASSERTION_SKEW_SECONDS:
            errors.append("the 'iat' must not be in the future")
    return errors


class JwksFetcher:
    """Fetches tool JWKS documents, uncached like Canvas, over one client per event loop
    (building an httpx client costs more than a loopback fetch)."""

    def __init__(self, timeout_seconds: float) -> None:
        self._timeout_seconds = timeout_seconds
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(timeout=self._timeout_seconds)
            self._loop = loop
        return self._client

    async def fetch(self, url: str) -> dict[str, Any]:
        return await _fetch_jwks(self._http(), url)


async def _fetch_jwks(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    try:
        response = await client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
    except httpx.HTTPError:
        raise invalid_request("JWK Error: Failed to fetch public key") from None
    try:
        document = response.json()
    except ValueError:
        raise invalid_request("JWK Error: Invalid JSON") from None
    if not isinstance(document, dict):
        raise invalid_request("JWK Error: Invalid JSON")
    return document


def candidate_keys(document: dict[str, Any], kid: str | None) -> list[rsa.RSAPublicKey]:
    """Keys that may have signed: a single JWK regardless of kid; in a set, the kid's key."""
    if isinstance(document.get("keys"), list):
        jwks = [jwk for jwk in document["keys"] if isinstance(jwk, dict)]
        if kid is not None:
            jwks = [jwk for jwk in jwks if jwk.get("kid") == kid]
    else:
        jwks = [document]
    keys = []
    for jwk in jwks:
        try:
            keys.append(rsa_public_key_from_jwk(jwk))
        except JoseError:
            continue
    return keys


def _verify_signature(jws: CompactJws, document: dict[str, Any]) -> None:
    if jws.alg != "RS256" or not any(
        rs256_valid(jws, key) for key in candidate_keys(document, jws.kid)
    ):
        raise invalid_request(SIGNATURE_INVALID)


async def grant(
    state: SandboxState, request: Request, params: dict[str, Any], jwks: JwksFetcher
) -> dict[str, Any]:
    """Validate a token request and return the success body, or raise TokenError."""
    if params.get("grant_type") != "client_credentials":
        raise TokenError(
            400,
            "unsupported_grant_type",
            "The grant_type you requested is not currently supported",
        )
    assertion = params.get("client_assertion")
    if not isinstance(assertion, str) or not assertion:
        with state.lock:
            key = state.developer_keys.get(str(params.get("client_id", "")))
            if key is None or not key.active:
                raise unknown_client()
        raise invalid_request("assertion method not supported for this grant_type")
    try:
        jws = parse_compact(assertion)
    except JoseError:
        raise unknown_client() from None
    with state.lock:
        key = state.developer_keys.get(str(jws.claims.get("sub", "")))
        if key is None or not key.active:
            raise unknown_client()
        client_id, key_scopes = key.client_id, key.scopes
        inline_jwk, jwk_url = key.public_jwk, key.public_jwk_url
    if params.get("client_assertion_type") != ASSERTION_TYPE_JWT_BEARER:
        raise invalid_request("assertion method not supported for this grant_type")
    if jwk_url:
        document = await jwks.fetch(jwk_url)
    else:
        document = inline_jwk or {}
    _verify_signature(jws, document)
    audience = token_url(request_origin(request))
    # The configured public URL is an equally valid audience (e.g. behind a proxy).
    audiences = {audience}
    if state.config.base_url:
        audiences.add(token_url(state.config.base_url.rstrip("/")))
    errors = assertion_claim_errors(jws.claims, audiences, state.clock().timestamp())
    if errors:
        raise invalid_request(" | ".join(errors))
    scopes = requested_scopes(params)
    not_granted = [scope for scope in scopes if scope not in key_scopes]
    if not scopes or not_granted:
        raise TokenError(400, "invalid_scope", SCOPE_ERROR + to_sentence(not_granted))
    state.record_token_grant(client_id)
    access_token = issue_access_token(state, client_id=client_id, scopes=scopes, audience=audience)
    return {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": state.config.access_token_lifetime_seconds,
        "scope": " ".join(scopes),
    }


def build_token_router(state: SandboxState) -> APIRouter:
    router = APIRouter(tags=["oauth2"])
    jwks = JwksFetcher(state.config.jwks_fetch_timeout_seconds)

    @router.post(TOKEN_PATH, summary="Client-credentials grant with a JWT client assertion")
    async def token(request: Request) -> Response:
        params = await read_params(request)
        return canvas_json(await grant(state, request, params, jwks))

    return router
