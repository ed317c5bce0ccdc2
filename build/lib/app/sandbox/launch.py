"""Simulated student launches: signed LTI 1.3 id_tokens, and the platform JWKS that verifies them.

`issue_launch` makes the id_token Canvas would post to the tool when a student opens the
tool from an assignment (with the AGS endpoint claim naming its line item) or from the course
navigation (no `lineitem`). `forge` makes the broken tokens launch verification must refuse.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from app.sandbox.jose import (
    encode_unsigned,
    generate_rsa_key,
    public_key_pem,
    sign_hs256,
    sign_rs256,
)
from app.sandbox.models import Assignment, Course, User
from app.sandbox.protocol import (
    AGS_SCOPES,
    CLAIM_AGS_ENDPOINT,
    CLAIM_CONTEXT,
    CLAIM_CUSTOM,
    CLAIM_DEPLOYMENT_ID,
    CLAIM_LAUNCH_PRESENTATION,
    CLAIM_MESSAGE_TYPE,
    CLAIM_RESOURCE_LINK,
    CLAIM_ROLES,
    CLAIM_TARGET_LINK_URI,
    CLAIM_TOOL_PLATFORM,
    CLAIM_VERSION,
    CONTEXT_TYPE_COURSE,
    PLATFORM_JWKS_PATH,
    ROLE_LEARNER,
    ROLE_STUDENT,
)
from app.sandbox.rendering import canvas_json
from app.sandbox.state import SandboxState
from app.sandbox.urls import line_item_url, line_items_url

ID_TOKEN_LIFETIME_SECONDS = 3600
DEFAULT_TARGET_LINK_URI = "https://tool.example/lti/launch"


class Forgery(StrEnum):
    """Ways to break an id_token on purpose."""

    EXPIRED = "expired"
    WRONG_AUD = "wrong_aud"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_DEPLOYMENT = "wrong_deployment"
    ALG_NONE = "alg_none"
    HS256_PUBLIC_KEY = "hs256_public_key"
    """HS256 keyed with the platform's public key PEM: the classic key-confusion attack."""
    UNKNOWN_KID = "unknown_kid"
    """Signed by a key the platform never published, under a kid it does not know."""
    BAD_SIGNATURE = "bad_signature"
    """The platform's kid, but another key's signature."""


@dataclass(frozen=True)
class LaunchRequest:
    course_id: str
    user: str
    """The student's Canvas id or LTI id."""
    assignment_id: str | None = None
    client_id: str | None = None
    nonce: str | None = None
    target_link_uri: str | None = None
    roles: tuple[str, ...] = (ROLE_STUDENT, ROLE_LEARNER)
    forge: Forgery | None = None


@dataclass(frozen=True)
class IssuedLaunch:
    id_token: str
    claims: dict[str, Any]


def _tool_of(course: Course, assignment: Assignment | None, client_id: str | None) -> str:
    if client_id is not None:
        return client_id
    if assignment is not None and assignment.client_id is not None:
        return assignment.client_id
    if len(course.tools) == 1:
        return next(iter(course.tools))
    raise ValueError("name the tool (client_id): the course has not exactly one")


def _person_claims(user: User) -> dict[str, Any]:
    given, _, family = user.name.partition(" ")
    claims: dict[str, Any] = {"name": user.name, "given_name": given, "family_name": family}
    if user.email:
        claims["email"] = user.email
    return claims


def launch_claims(state: SandboxState, origin: str, request: LaunchRequest) -> dict[str, Any]:
    """The claims of a Canvas LtiResourceLinkRequest; call with `state.lock` held."""
    course = state.course(request.course_id)
    user = state.user(request.user)
    assignment = state.assignment(request.assignment_id) if request.assignment_id else None
    client_id = _tool_of(course, assignment, request.client_id)
    install = course.tools.get(client_id)
    if install is None:
        raise ValueError(f"the tool {client_id} is not installed in course {course.id}")
    key = state.developer_key(client_id)
    now = int(state.clock().timestamp())
    ags_claim: dict[str, Any] = {
        "scope": [scope for scope in AGS_SCOPES if scope in key.scopes],
        "lineitems": line_items_url(origin, course.id),
    }
    if assignment is not None:
        primary = state.primary_line_item(assignment.id)
        if primary is not None:
            ags_claim["lineitem"] = line_item_url(origin, course.id, primary.id)
        link = {"id": assignment.resource_link_id, "title": assignment.name}
    else:
        link = {"id": course.lti_context_id, "title": course.name}
    target = request.target_link_uri or (assignment.launch_url if assignment else None)
    return {
        "iss": state.issuer,
        "aud": client_id,
        "azp": client_id,
        "sub": user.lti_id,
        "exp": now + ID_TOKEN_LIFETIME_SECONDS,
        "iat": now,
        "nonce": request.nonce or uuid.uuid4().hex,
        **_person_claims(user),
        "locale": "en",
        CLAIM_DEPLOYMENT_ID: install.deployment_id,
        CLAIM_MESSAGE_TYPE: "LtiResourceLinkRequest",
        CLAIM_VERSION: "1.3.0",
        CLAIM_TARGET_LINK_URI: target or DEFAULT_TARGET_LINK_URI,
        CLAIM_RESOURCE_LINK: link,
        CLAIM_CONTEXT: {
            "id": course.lti_context_id,
            "label": f"C{course.id}",
            "title": course.name,
            "type": [CONTEXT_TYPE_COURSE],
        },
        CLAIM_ROLES: list(request.roles),
        CLAIM_TOOL_PLATFORM: {
            "guid": f"sandbox-{state.platform_kid[:12]}",
            "name": "Canvas Sandbox",
            "version": "cloud",
            "product_family_code": "canvas",
        },
        CLAIM_LAUNCH_PRESENTATION: {"document_target": "iframe", "locale": "en"},
        CLAIM_CUSTOM: {},
        CLAIM_AGS_ENDPOINT: ags_claim,
    }


def _forged_claims(claims: dict[str, Any], forgery: Forgery | None) -> dict[str, Any]:
    forged = dict(claims)
    if forgery is Forgery.EXPIRED:
        forged["iat"] = claims["iat"] - 2 * ID_TOKEN_LIFETIME_SECONDS
        forged["exp"] = claims["iat"] - ID_TOKEN_LIFETIME_SECONDS
    elif forgery is Forgery.WRONG_AUD:
        forged["aud"] = forged["azp"] = f"{claims['aud']}-not-this-tool"
    elif forgery is Forgery.WRONG_ISSUER:
        forged["iss"] = "https://impostor.example"
    elif forgery is Forgery.WRONG_DEPLOYMENT:
        forged[CLAIM_DEPLOYMENT_ID] = f"unknown-{uuid.uuid4().hex[:8]}"
    return forged


def issue_launch(state: SandboxState, origin: str, request: LaunchRequest) -> IssuedLaunch:
    """Sign (or forge) the id_token of one launch. `origin` roots the AGS URLs."""
    with state.lock:
        claims = _forged_claims(launch_claims(state, origin, request), request.forge)
    key, kid = state.platform_key, state.platform_kid
    if request.forge is Forgery.ALG_NONE:
        token = encode_unsigned(claims, header={"kid": kid})
    elif request.forge is Forgery.HS256_PUBLIC_KEY:
        token = sign_hs256(claims, public_key_pem(key.public_key()), header={"kid": kid})
    elif request.forge is Forgery.UNKNOWN_KID:
        token = sign_rs256(claims, generate_rsa_key(), kid=f"unknown-{uuid.uuid4().hex[:12]}")
    elif request.forge is Forgery.BAD_SIGNATURE:
        token = sign_rs256(claims, generate_rsa_key(), kid=kid)
    else:
        token = sign_rs256(claims, key, kid=kid)
    return IssuedLaunch(id_token=token, claims=claims)


def build_platform_jwks_router(state: SandboxState) -> APIRouter:
    router = APIRouter(tags=["launch"])

    @router.get(PLATFORM_JWKS_PATH, summary="The platform's public keys (verify id_tokens)")
    async def platform_jwks() -> Response:
        return canvas_json(state.platform_jwks())

    return router
