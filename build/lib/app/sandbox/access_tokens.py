"""Access tokens: what the token endpoint grants and what AGS endpoints accept.

Like Canvas's, a token is a platform-signed JWT (HS256 with a platform secret) carrying the
granted scopes in a space-joined ``scopes`` claim. Nothing is stored: tokens cannot be revoked
and any number may be outstanding. Verification failures are 401s with Canvas's messages
(canvas-ags.md §5.4).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from app.sandbox.errors import LtiServiceError
from app.sandbox.jose import JoseError, parse_compact, sign_hs256, verify_hs256
from app.sandbox.state import SandboxState

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "aud", "exp", "iat", "jti", "iss")
MAX_IAT_AGE_SECONDS = 3600
MAX_IAT_SKEW_SECONDS = 30
FIELDS_PREFIX = "Invalid access token field/s: "


@dataclass(frozen=True)
class AccessToken:
    client_id: str
    scopes: frozenset[str]
    claims: dict[str, Any]


def issue_access_token(
    state: SandboxState, *, client_id: str, scopes: Sequence[str], audience: str
) -> str:
    now = int(state.clock().timestamp())
    claims = {
        "iss": state.issuer,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + state.config.access_token_lifetime_seconds,
        "jti": str(uuid.uuid4()),
        "scopes": " ".join(scopes),
    }
    return sign_hs256(claims, state.access_token_secret)


def _unauthorized(message: str) -> LtiServiceError:
    return LtiServiceError(message, 401)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def verify_access_token(
    state: SandboxState, token: str | None, accepted_audiences: Collection[str]
) -> AccessToken:
    """Check an AGS bearer token; raises shape-A 401s in Canvas's order."""
    if not token:
        raise _unauthorized("Missing access token")
    try:
        jws = parse_compact(token)
    except JoseError:
        raise _unauthorized("Invalid access token format") from None
    if jws.alg != ALGORITHM:
        raise _unauthorized("Access token signature algorithm not allowed")
    if not verify_hs256(jws, state.access_token_secret):
        raise _unauthorized("Access token invalid - signature likely incorrect")
    claims = jws.claims
    now = state.clock().timestamp()
    exp = claims.get("exp")
    if _is_number(exp) and exp < now:  # type: ignore[operator]
        raise _unauthorized("Access token expired")
    missing = [name for name in REQUIRED_CLAIMS if claims.get(name) in (None, "")]
    if missing:
        raise _unauthorized(
            f"{FIELDS_PREFIX}the following assertions are missing: {','.join(missing)}"
        )
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if not any(audience in accepted_audiences for audience in audiences):
        raise _unauthorized(f"{FIELDS_PREFIX}the 'aud' is invalid")
    iat = claims["iat"]
    if not _is_number(iat):
        raise _unauthorized(f"{FIELDS_PREFIX}the 'iat' must be a number")
    if iat < now - MAX_IAT_AGE_SECONDS:
        raise _unauthorized(
            f"{FIELDS_PREFIX}the 'iat' must be less than {MAX_IAT_AGE_SECONDS} seconds old"
        )
    if iat > now + MAX_IAT_SKEW_SECONDS:
        raise _unauthorized(f"{FIELDS_PREFIX}the 'iat' must not be in the future")
    scopes = claims.get("scopes")
    granted = frozenset(scopes.split()) if isinstance(scopes, str) else frozenset()
    return AccessToken(client_id=str(claims["sub"]), scopes=granted, claims=claims)
