"""Verifying an LTI 1.3 launch (the platform's id_token) and reading what passback needs.

The id_token is a JWT the platform signs with one of the keys it publishes at its JWKS URL.
Only RS256 is accepted: `none` and HMAC tokens are refused before any key is looked at, so a
token "signed" with the platform's public key as an HMAC secret gets nowhere. The token must
name the registration (`iss`, and its `client_id` in `aud`, `azp` when several audiences),
be current (`exp`, `iat`, `nbf` within a small leeway) and come from a registered
deployment. Failures are `LaunchRejectedError` with a stable `code`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import KeySet, RSAKey
from joserfc.jws import extract_compact

from app.lti.jwks import JwksCache, JwksUnavailableError

ID_TOKEN_ALGORITHM = "RS256"
LEEWAY_SECONDS = 60
"""Allowed clock difference between the platform and us, for `exp`, `iat` and `nbf`."""

CLAIM_PREFIX = "https://purl.imsglobal.org/spec/lti/claim/"
CLAIM_MESSAGE_TYPE = CLAIM_PREFIX + "message_type"
CLAIM_VERSION = CLAIM_PREFIX + "version"
CLAIM_DEPLOYMENT_ID = CLAIM_PREFIX + "deployment_id"
CLAIM_CONTEXT = CLAIM_PREFIX + "context"
CLAIM_RESOURCE_LINK = CLAIM_PREFIX + "resource_link"
CLAIM_ROLES = CLAIM_PREFIX + "roles"
CLAIM_AGS_ENDPOINT = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"
SCOPE_SCORE = "https://purl.imsglobal.org/spec/lti-ags/scope/score"
LTI_VERSION = "1.3.0"
RESOURCE_LINK_LAUNCH = "LtiResourceLinkRequest"

_ID_LENGTH = 255
_URL_LENGTH = 2048
_TITLE_LENGTH = 1024
_NONCE_LENGTH = 1024
MAX_PORT = 65_535
LATEST_INSTANT = 253_402_300_799
"""9999-12-31T23:59:59Z: a time claim beyond it is absurd."""


class LaunchRejection(StrEnum):
    """Why a launch is refused (the `code` of the problem answer)."""

    invalid_id_token = "invalid_id_token"
    unsupported_algorithm = "unsupported_algorithm"
    unknown_platform = "unknown_platform"
    invalid_audience = "invalid_audience"
    platform_inactive = "platform_inactive"
    unknown_signing_key = "unknown_signing_key"
    invalid_signature = "invalid_signature"
    token_expired = "token_expired"
    token_not_yet_valid = "token_not_yet_valid"
    unknown_deployment = "unknown_deployment"
    lineitem_host_not_allowed = "lineitem_host_not_allowed"
    platform_keys_unavailable = "platform_keys_unavailable"
    id_token_reused = "id_token_reused"


class LaunchRejectedError(Exception):
    def __init__(self, code: LaunchRejection, message: str) -> None:
        super().__init__(message)
        self.code = code


def _reject(code: LaunchRejection, message: str) -> LaunchRejectedError:
    return LaunchRejectedError(code, message)


@dataclass(frozen=True)
class TokenAddress:
    """Who the (not yet verified) token says it is from and for: enough to find the
    registration whose keys verify it."""

    issuer: str
    audiences: tuple[str, ...]
    authorized_party: str | None
    algorithm: str
    kid: str | None

    def names_client(self, client_id: str) -> bool:
        """`client_id` is the audience (and the authorized party when there are several)."""
        if client_id not in self.audiences:
            return False
        if self.authorized_party is not None:
            return self.authorized_party == client_id
        return len(self.audiences) == 1


@dataclass(frozen=True)
class Registration:
    """The parts of a platform registration that verify its launches."""

    issuer: str
    client_id: str
    jwks_url: str
    deployment_ids: tuple[str, ...]


@dataclass(frozen=True)
class LaunchClaims:
    """What a verified launch says about where the student's grade goes."""

    deployment_id: str
    lti_user_id: str
    roles: tuple[str, ...]
    context_id: str | None
    context_title: str | None
    resource_link_id: str | None
    lineitem_url: str | None
    lineitems_url: str | None
    ags_scopes: tuple[str, ...]
    nonce: str
    token_id: str | None
    """The token's `jti`, when it has one."""
    expires_at: float
    """The token's `exp` (seconds since the epoch, checked to be a real instant)."""

    @property
    def gradable(self) -> bool:
        return can_post_scores(self.lineitem_url, self.ags_scopes)


def can_post_scores(lineitem_url: str | None, ags_scopes: Iterable[str]) -> bool:
    """A launch lets the tool post scores: it names a line item and grants the score scope."""
    return lineitem_url is not None and SCOPE_SCORE in ags_scopes


def read_address(token: str) -> TokenAddress:
    """Read the issuer, audience and signing algorithm of a token without trusting it."""
    try:
        compact = extract_compact(token.encode("ascii"))
        claims = json.loads(compact.payload)
    except (JoseError, ValueError, UnicodeError) as exc:
        raise _reject(LaunchRejection.invalid_id_token, "the id_token is not a JWT") from exc
    header = compact.protected
    if not isinstance(claims, dict):
        raise _reject(LaunchRejection.invalid_id_token, "the id_token's payload is not an object")
    algorithm = header.get("alg")
    if algorithm != ID_TOKEN_ALGORITHM:
        raise _reject(
            LaunchRejection.unsupported_algorithm,
            f"id_tokens must be signed with {ID_TOKEN_ALGORITHM}, not {algorithm!r}",
        )
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise _reject(LaunchRejection.invalid_id_token, "the id_token has no 'iss'")
    audience = claims.get("aud")
    audiences = (audience,) if isinstance(audience, str) else audience
    if (
        not isinstance(audiences, list | tuple)
        or not audiences
        or not all(isinstance(item, str) for item in audiences)
    ):
        raise _reject(LaunchRejection.invalid_id_token, "the id_token has no valid 'aud'")
    party = claims.get("azp")
    kid = header.get("kid")
    return TokenAddress(
        issuer=issuer,
        audiences=tuple(audiences),
        authorized_party=party if isinstance(party, str) else None,
        algorithm=algorithm,
        kid=kid if isinstance(kid, str) else None,
    )


def _candidate_keys(key_set: KeySet, kid: str | None) -> list[RSAKey]:
    keys = [key for key in key_set.keys if isinstance(key, RSAKey)]
    if kid is not None:
        return [key for key in keys if key.kid == kid]
    return [key for key in keys if key.get("alg") in (None, ID_TOKEN_ALGORITHM)]


async def _signed_claims(
    token: str, address: TokenAddress, registration: Registration, jwks: JwksCache
) -> dict[str, Any]:
    try:
        key_set = await jwks.key_set(registration.jwks_url, address.kid)
    except JwksUnavailableError as exc:
        raise _reject(LaunchRejection.platform_keys_unavailable, str(exc)) from exc
    keys = _candidate_keys(key_set, address.kid)
    if not keys:
        raise _reject(
            LaunchRejection.unknown_signing_key,
            f"the platform publishes no key {address.kid!r} at {registration.jwks_url}",
        )
    for key in keys:
        try:
            return dict(jwt.decode(token, key, algorithms=[ID_TOKEN_ALGORITHM]).claims)
        except BadSignatureError:
            continue
        except (JoseError, ValueError) as exc:
            raise _reject(
                LaunchRejection.invalid_id_token, f"the id_token is invalid: {exc}"
            ) from exc
    raise _reject(
        LaunchRejection.invalid_signature, "the id_token's signature does not match the platform"
    )


def _timestamp(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    """A time claim: a number of seconds since 1970 up to the end of year 9999 (NaN,
    infinities and 1e308 are not instants)."""
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _reject(LaunchRejection.invalid_id_token, f"the id_token has no numeric {name!r}")
    if not (isinstance(value, int) or math.isfinite(value)) or not 0 <= value <= LATEST_INSTANT:
        raise _reject(
            LaunchRejection.invalid_id_token, f"the id_token's {name!r} is not a real instant"
        )
    return float(value)


def _check_times(claims: Mapping[str, Any], now: datetime, leeway: int) -> float:
    """Check the token is current; returns its `exp`."""
    moment = now.timestamp()
    expires = _timestamp(claims, "exp", required=True)
    issued = _timestamp(claims, "iat", required=True)
    not_before = _timestamp(claims, "nbf", required=False)
    assert expires is not None and issued is not None
    if moment > expires + leeway:
        raise _reject(LaunchRejection.token_expired, "the id_token has expired")
    if issued > moment + leeway or (not_before is not None and not_before > moment + leeway):
        raise _reject(LaunchRejection.token_not_yet_valid, "the id_token is not valid yet")
    return expires


def _text(value: object, name: str, *, max_length: int, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise _reject(
            LaunchRejection.invalid_id_token,
            f"the id_token's {name} must be a non-empty string of at most {max_length} characters",
        )
    return value


def _service_url(value: object, name: str) -> str | None:
    """An AGS URL a client can call later: what httpx parses, a port within 1-65535, and no
    white space or control character anywhere (httpx would quote a space, then the platform
    would see another URL). Where it may point is checked against the registration after."""
    url = _text(value, name, max_length=_URL_LENGTH)
    if url is None:
        return None
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise _reject(
            LaunchRejection.invalid_id_token, f"the id_token's {name} is not a valid URL: {exc}"
        ) from exc
    problem = None
    if parsed.port is not None and not 0 < parsed.port <= MAX_PORT:
        problem = f"its port {parsed.port} is out of range"
    elif any(character.isspace() or not character.isprintable() for character in url):
        problem = "it contains white space or a control character"
    if problem is not None:
        raise _reject(
            LaunchRejection.invalid_id_token, f"the id_token's {name} is not a valid URL: {problem}"
        )
    return url


def _object(claims: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = claims.get(name, {})
    if not isinstance(value, dict):
        raise _reject(LaunchRejection.invalid_id_token, f"the id_token's {name} is not an object")
    return value


def _strings(value: object, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _reject(LaunchRejection.invalid_id_token, f"the id_token's {name} is not a list")
    return tuple(value)


def _read_claims(
    claims: Mapping[str, Any], registration: Registration, expires_at: float
) -> LaunchClaims:
    if claims.get(CLAIM_VERSION) != LTI_VERSION:
        raise _reject(LaunchRejection.invalid_id_token, f"the launch is not LTI {LTI_VERSION}")
    if claims.get(CLAIM_MESSAGE_TYPE) != RESOURCE_LINK_LAUNCH:
        raise _reject(
            LaunchRejection.invalid_id_token,
            f"the launch is a {claims.get(CLAIM_MESSAGE_TYPE)!r}, not a {RESOURCE_LINK_LAUNCH}",
        )
    deployment_id = _text(
        claims.get(CLAIM_DEPLOYMENT_ID), "deployment_id", max_length=_ID_LENGTH, required=True
    )
    assert deployment_id is not None
    if deployment_id not in registration.deployment_ids:
        raise _reject(
            LaunchRejection.unknown_deployment,
            f"deployment {deployment_id!r} is not registered for this platform",
        )
    lti_user_id = _text(claims.get("sub"), "sub", max_length=_ID_LENGTH, required=True)
    assert lti_user_id is not None
    # The nonce (and jti) tell one launch from another: a token binds one student.
    nonce = _text(claims.get("nonce"), "nonce", max_length=_NONCE_LENGTH, required=True)
    assert nonce is not None
    context = _object(claims, CLAIM_CONTEXT)
    resource_link = _object(claims, CLAIM_RESOURCE_LINK)
    endpoint = _object(claims, CLAIM_AGS_ENDPOINT)
    title = context.get("title")
    return LaunchClaims(
        deployment_id=deployment_id,
        lti_user_id=lti_user_id,
        roles=_strings(claims.get(CLAIM_ROLES), "roles"),
        context_id=_text(context.get("id"), "context id", max_length=_ID_LENGTH),
        context_title=title[:_TITLE_LENGTH] if isinstance(title, str) else None,
        resource_link_id=_text(resource_link.get("id"), "resource link id", max_length=_ID_LENGTH),
        lineitem_url=_service_url(endpoint.get("lineitem"), "AGS lineitem"),
        lineitems_url=_service_url(endpoint.get("lineitems"), "AGS lineitems"),
        ags_scopes=_strings(endpoint.get("scope"), "AGS scope"),
        nonce=nonce,
        token_id=_text(claims.get("jti"), "jti", max_length=_NONCE_LENGTH),
        expires_at=expires_at,
    )


async def verify_launch(
    token: str,
    registration: Registration,
    *,
    jwks: JwksCache,
    now: datetime,
    leeway: int = LEEWAY_SECONDS,
) -> LaunchClaims:
    """Verify that `token` is a current launch from `registration` and read its claims.

    The platform's keys come from the JWKS cache, fetched again when the token names a key
    the cached set lacks (the platform rotated).
    """
    address = read_address(token)
    if address.issuer != registration.issuer:
        raise _reject(LaunchRejection.unknown_platform, "the id_token is from another issuer")
    if not address.names_client(registration.client_id):
        raise _reject(
            LaunchRejection.invalid_audience,
            f"the id_token is not addressed to client_id {registration.client_id!r}",
        )
    claims = await _signed_claims(token, address, registration, jwks)
    expires_at = _check_times(claims, now, leeway)
    return _read_claims(claims, registration, expires_at)
