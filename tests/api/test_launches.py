"""Launch intake: real id_tokens from the sandbox Canvas, verified against its JWKS."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from app.context import AppContext
from app.lti.jwks import JwksCache
from app.sandbox.jose import generate_rsa_key, rsa_public_jwk
from app.sandbox.protocol import SCOPE_LINEITEM, SCOPE_RESULT_READONLY, SCOPE_SCORE
from app.store.models import Launch
from tests.api.canvas_world import (
    ADMIN,
    EVENTS,
    canvas_world,
    id_token,
    launch_from_canvas,
    post_launch,
)
from tests.support.auth import bearer
from tests.support.sandbox import (  # noqa: F401  (fixtures)
    RunningSandbox,
    ToolKey,
    sandbox_fixture,
    sandbox_server_fixture,
    tool_key_fixture,
)


async def launches_kept(context: AppContext) -> int:
    async with context.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Launch)) or 0)


async def test_a_launch_from_a_canvas_assignment_is_kept_with_its_line_item(
    client: httpx.AsyncClient, sandbox: RunningSandbox, tool_key: ToolKey
) -> None:
    world = await canvas_world(client, sandbox, tool_jwk=tool_key.public_jwk())
    binding = await launch_from_canvas(client, sandbox, world, student_id="s-5")

    assert binding["formative_id"] == "fm-42"
    assert binding["student_id"] == "s-5"
    assert binding["class_id"] == "c-3"
    assert binding["platform_id"] == world.platform["id"]
    assert binding["deployment_id"] == world.scenario["deployment_id"]
    assert binding["lti_user_id"] == world.lti_id(0)
    assert binding["lineitem_url"] == world.line_item_url
    assert binding["lineitems_url"].endswith(f"/courses/{world.course_id}/line_items")
    assert SCOPE_SCORE in binding["ags_scopes"]
    assert binding["context_id"]
    assert binding["resource_link_id"]
    assert "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner" in binding["roles"]
    assert binding["gradable"] is True
    assert binding["reasons"] == []


async def test_a_new_launch_replaces_the_binding_of_the_student_and_formative(
    client: httpx.AsyncClient, sandbox: RunningSandbox, tool_key: ToolKey, context: AppContext
) -> None:
    world = await canvas_world(client, sandbox, tool_jwk=tool_key.public_jwk())
    first = await launch_from_canvas(client, sandbox, world)
    other = await sandbox.admin.create_assignment(
        world.course_id, name="Retake", points="5", client_id=world.scenario["client_id"]
    )
    token = await id_token(sandbox, world, assignment_id=other["id"])
    second = await post_launch(client, token, class_id="c-9")

    assert second.status_code == 201, second.text
    assert second.json()["id"] == first["id"]
    assert second.json()["class_id"] == "c-9"
    assert second.json()["lineitem_url"] == other["line_item_url"]
    assert await launches_kept(context) == 1


async def test_a_course_navigation_launch_is_kept_and_marked_not_an_assignment(
    client: httpx.AsyncClient, sandbox: RunningSandbox, tool_key: ToolKey
) -> None:
    world = await canvas_world(client, sandbox, tool_jwk=tool_key.public_jwk())
    binding = await launch_from_canvas(client, sandbox, world, from_assignment=False)

    assert binding["lineitem_url"] is None
    assert binding["gradable"] is False
    assert [reason["code"] for reason in binding["reasons"]] == ["not_a_canvas_assignment"]
    assert "assignment" in binding["reasons"][0]["message"]


async def test_a_launch_without_the_score_scope_is_kept_and_marked(
    client: httpx.AsyncClient, sandbox: RunningSandbox, tool_key: ToolKey
) -> None:
    world = await canvas_world(
        client,
        sandbox,
        tool_jwk=tool_key.public_jwk(),
        scopes=[SCOPE_LINEITEM, SCOPE_RESULT_READONLY],
    )
    binding = await launch_from_canvas(client, sandbox, world)

    assert binding["lineitem_url"] == world.line_item_url
    assert SCOPE_SCORE not in binding["ags_scopes"]
    assert binding["gradable"] is False
    assert [reason["code"] for reason in binding["reasons"]] == ["not_a_canvas_assignment"]


@pytest.mark.parametrize(
    ("forgery", "code"),
    [
        ("bad_signature", "invalid_signature"),
        ("expired", "token_expired"),
        ("wrong_aud", "invalid_audience"),
        ("alg_none", "unsupported_algorithm"),
        ("hs256_public_key", "unsupported_algorithm"),
        ("unknown_kid", "unknown_signing_key"),
        ("wrong_deployment", "unknown_deployment"),
        ("wrong_issuer", "unknown_platform"),
    ],
)
async def test_a_forged_or_stale_id_token_is_refused_with_its_reason(
    client: httpx.AsyncClient,
    sandbox: RunningSandbox,
    tool_key: ToolKey,
    context: AppContext,
    forgery: str,
    code: str,
) -> None:
    world = await canvas_world(client, sandbox, tool_jwk=tool_key.public_jwk())
    response = await post_launch(client, await id_token(sandbox, world, forge=forgery))

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert response.json()["detail"]
    assert await launches_kept(context) == 0


async def test_a_launch_from_an_unregistered_canvas_is_refused(
    client: httpx.AsyncClient, sandbox: RunningSandbox, tool_key: ToolKey
) -> None:
    world = await canvas_world(client, sandbox, register=False, tool_jwk=tool_key.public_jwk())
    response = await post_launch(client, await id_token(sandbox, world))
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_platform"


async def test_a_launch_through_a_deactivated_registration_is_refused(
    client: httpx.AsyncClient, sandbox: RunningSandbox, tool_key: ToolKey, context: AppContext
) -> None:
    world = await canvas_world(client, sandbox, tool_jwk=tool_key.public_jwk())
    deleted = await client.delete(f"/v1/platforms/{world.platform['id']}", headers=ADMIN)
    assert deleted.status_code == 204

    response = await post_launch(client, await id_token(sandbox, world))
    assert response.status_code == 422
    assert response.json()["code"] == "platform_inactive"
    assert await launches_kept(context) == 0


async def test_a_line_item_on_a_host_the_registration_does_not_allow_is_refused(
    client: httpx.AsyncClient, sandbox: RunningSandbox, tool_key: ToolKey, context: AppContext
) -> None:
    world = await canvas_world(
        client,
        sandbox,
        registration={"allowed_hosts": ["canvas.example.edu"]},
        tool_jwk=tool_key.public_jwk(),
    )
    response = await post_launch(client, await id_token(sandbox, world))

    assert response.status_code == 422
    assert response.json()["code"] == "lineitem_host_not_allowed"
    assert "127.0.0.1" in response.json()["detail"]
    assert await launches_kept(context) == 0


async def test_a_token_that_is_not_a_jwt_is_refused(client: httpx.AsyncClient) -> None:
    response = await post_launch(client, "not-a-token")
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_id_token"


async def test_clock_differences_within_the_leeway_are_tolerated(
    client: httpx.AsyncClient, sandbox: RunningSandbox, tool_key: ToolKey
) -> None:
    world = await canvas_world(client, sandbox, tool_jwk=tool_key.public_jwk())
    # Tokens live an hour: issued 3,630 s ago, it expired 30 s ago (inside the leeway).
    sandbox.clock.advance(-3630)
    slightly_late = await post_launch(client, await id_token(sandbox, world))
    assert slightly_late.status_code == 201, slightly_late.text

    sandbox.clock.advance(-120)
    too_late = await post_launch(client, await id_token(sandbox, world))
    assert too_late.json()["code"] == "token_expired"


async def test_a_token_issued_in_the_future_is_refused(
    client: httpx.AsyncClient, sandbox: RunningSandbox, tool_key: ToolKey
) -> None:
    world = await canvas_world(client, sandbox, tool_jwk=tool_key.public_jwk())
    sandbox.clock.advance(300)
    response = await post_launch(client, await id_token(sandbox, world))
    assert response.status_code == 422
    assert response.json()["code"] == "token_not_yet_valid"


class SteppingMonotonic:
    """A monotonic clock the test moves by hand (the JWKS cache's refetch interval)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stepping_jwks(context: AppContext) -> Iterator[SteppingMonotonic]:
    clock = SteppingMonotonic()
    original = context.jwks
    context.jwks = JwksCache(context.http, monotonic=clock)
    yield clock
    context.jwks = original


async def test_the_platform_keys_are_fetched_again_when_it_signs_with_a_new_key(
    client: httpx.AsyncClient,
    sandbox: RunningSandbox,
    tool_key: ToolKey,
    stepping_jwks: SteppingMonotonic,
) -> None:
    world = await canvas_world(client, sandbox, tool_jwk=tool_key.public_jwk())
    await launch_from_canvas(client, sandbox, world)  # caches the platform's current key

    # The platform rotates its key (the sandbox has no admin call for this; set it directly).
    new_key = generate_rsa_key()
    with sandbox.state.lock:
        sandbox.state.platform_key = new_key
        sandbox.state.platform_kid = rsa_public_jwk(new_key.public_key())["kid"]
    stepping_jwks.now += 30  # past the refetch interval, well inside the cache's lifetime

    response = await post_launch(client, await id_token(sandbox, world), student_id="s-2")
    assert response.status_code == 201, response.text


async def test_unreachable_platform_keys_answer_503(
    client: httpx.AsyncClient, sandbox: RunningSandbox, tool_key: ToolKey
) -> None:
    world = await canvas_world(
        client,
        sandbox,
        registration={"jwks_url": "http://127.0.0.1:9/api/lti/security/jwks"},
        tool_jwk=tool_key.public_jwk(),
    )
    response = await post_launch(client, await id_token(sandbox, world))
    assert response.status_code == 503
    assert response.json()["code"] == "platform_keys_unavailable"


async def test_launches_need_the_events_scope(client: httpx.AsyncClient) -> None:
    body = {"id_token": "x.y.z", "formative_id": "f", "student_id": "s", "class_id": "c"}
    assert (await client.post("/v1/launches", json=body)).status_code == 401
    wrong_scope = await client.post("/v1/launches", json=body, headers=ADMIN)
    assert wrong_scope.status_code == 403
    assert (await client.post("/v1/launches", json=body, headers=bearer("nope"))).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"formative_id": "f", "student_id": "s", "class_id": "c"}, "body.id_token"),
        (
            {"id_token": "x", "formative_id": "f", "student_id": "s", "class_id": "c", "x": 1},
            "body.x",
        ),
        ({"id_token": "x", "formative_id": 42, "student_id": "s", "class_id": "c"}, None),
        ({"id_token": "x", "formative_id": "", "student_id": "s", "class_id": "c"}, None),
    ],
)
async def test_a_malformed_launch_body_is_a_validation_problem(
    client: httpx.AsyncClient, body: dict[str, object], field: str | None
) -> None:
    response = await client.post("/v1/launches", json=body, headers=EVENTS)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    if field is not None:
        assert response.json()["errors"][0]["field"] == field
