"""Simulated launches: id_tokens a tool verifies against the platform JWKS (PyJWT, independent)."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest

from app.sandbox import Scenario
from app.sandbox.protocol import (
    AGS_SCOPES,
    CLAIM_AGS_ENDPOINT,
    CLAIM_CONTEXT,
    CLAIM_DEPLOYMENT_ID,
    CLAIM_MESSAGE_TYPE,
    CLAIM_RESOURCE_LINK,
    CLAIM_ROLES,
    CLAIM_VERSION,
    ROLE_LEARNER,
)
from tests.sandbox.canvas import line_item_url, media_type
from tests.support.sandbox import RunningSandbox


async def platform_keys(sandbox: RunningSandbox, http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get(sandbox.jwks_url)
    assert response.status_code == 200
    assert media_type(response) == "application/json"
    return {jwk["kid"]: jwt.PyJWK(jwk) for jwk in response.json()["keys"]}


def verify(token: str, keys: dict[str, Any], audience: str, issuer: str) -> dict[str, Any]:
    kid = jwt.get_unverified_header(token).get("kid")
    if kid not in keys:
        raise jwt.InvalidKeyError(f"unknown kid {kid}")
    claims: dict[str, Any] = jwt.decode(
        token, keys[kid].key, algorithms=["RS256"], audience=audience, issuer=issuer
    )
    return claims


async def test_assignment_launch_verifies_and_carries_canvas_claims(
    sandbox: RunningSandbox, world: Scenario, http: httpx.AsyncClient
) -> None:
    launch = await sandbox.admin.launch(
        world.course_id, world.students[0].lti_id, assignment_id=world.assignment_id, nonce="n-1"
    )

    claims = verify(
        launch["id_token"], await platform_keys(sandbox, http), world.client_id, sandbox.issuer
    )

    assert jwt.get_unverified_header(launch["id_token"])["alg"] == "RS256"
    assert claims["sub"] == world.students[0].lti_id
    assert (claims["azp"], claims["nonce"]) == (world.client_id, "n-1")
    assert claims[CLAIM_DEPLOYMENT_ID] == world.deployment_id
    assert claims[CLAIM_MESSAGE_TYPE] == "LtiResourceLinkRequest"
    assert claims[CLAIM_VERSION] == "1.3.0"
    assert claims[CLAIM_ROLES][-1] == ROLE_LEARNER
    course = sandbox.state.course(world.course_id)
    assert claims[CLAIM_CONTEXT]["id"] == course.lti_context_id
    assignment = sandbox.state.assignment(world.assignment_id)
    assert claims[CLAIM_RESOURCE_LINK]["id"] == assignment.resource_link_id
    assert claims[CLAIM_AGS_ENDPOINT] == {
        "scope": list(AGS_SCOPES),
        "lineitems": sandbox.url(f"/api/lti/courses/{world.course_id}/line_items"),
        "lineitem": line_item_url(sandbox, world),
    }
    assert claims["exp"] - claims["iat"] == 3600


async def test_course_navigation_launch_has_no_line_item(
    sandbox: RunningSandbox, world: Scenario, http: httpx.AsyncClient
) -> None:
    launch = await sandbox.admin.launch(world.course_id, world.students[1].user_id)

    claims = verify(
        launch["id_token"], await platform_keys(sandbox, http), world.client_id, sandbox.issuer
    )

    assert "lineitem" not in claims[CLAIM_AGS_ENDPOINT]
    assert claims[CLAIM_AGS_ENDPOINT]["lineitems"].endswith(
        f"/courses/{world.course_id}/line_items"
    )
    assert claims["sub"] == world.students[1].lti_id


async def test_launch_for_a_course_without_the_tool_is_refused_by_admin(
    sandbox: RunningSandbox, world: Scenario
) -> None:
    bare = sandbox.state.create_course()
    sandbox.state.create_student(bare.id, lti_id=world.students[0].lti_id)

    with pytest.raises(httpx.HTTPStatusError) as refused:
        await sandbox.admin.launch(bare.id, world.students[0].lti_id, client_id=world.client_id)

    assert refused.value.response.status_code == 422


@pytest.mark.parametrize(
    ("forge", "error"),
    [
        ("expired", jwt.ExpiredSignatureError),
        ("wrong_aud", jwt.InvalidAudienceError),
        ("wrong_issuer", jwt.InvalidIssuerError),
        ("alg_none", jwt.InvalidAlgorithmError),
        ("hs256_public_key", jwt.InvalidAlgorithmError),
        ("unknown_kid", jwt.InvalidKeyError),
        ("bad_signature", jwt.InvalidSignatureError),
    ],
)
async def test_forged_launch_fails_verification(
    sandbox: RunningSandbox,
    world: Scenario,
    http: httpx.AsyncClient,
    forge: str,
    error: type[Exception],
) -> None:
    launch = await sandbox.admin.launch(
        world.course_id,
        world.students[0].lti_id,
        assignment_id=world.assignment_id,
        forge=forge,
    )
    keys = await platform_keys(sandbox, http)

    with pytest.raises(error):
        verify(launch["id_token"], keys, world.client_id, sandbox.issuer)


async def test_wrong_deployment_forgery_names_an_unknown_deployment(
    sandbox: RunningSandbox, world: Scenario, http: httpx.AsyncClient
) -> None:
    launch = await sandbox.admin.launch(
        world.course_id, world.students[0].lti_id, forge="wrong_deployment"
    )

    claims = verify(
        launch["id_token"], await platform_keys(sandbox, http), world.client_id, sandbox.issuer
    )

    assert claims[CLAIM_DEPLOYMENT_ID] != world.deployment_id
