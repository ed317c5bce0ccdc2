"""The AGS authorization ladder (canvas-ags.md §3.1 steps 1–8, §5.4, §6 rows 2–12)."""

from __future__ import annotations

import httpx

from app.sandbox import Scenario
from app.sandbox.access_tokens import issue_access_token
from app.sandbox.jose import encode_unsigned, parse_compact, sign_hs256
from app.sandbox.models import CourseState
from app.sandbox.protocol import SCOPE_LINEITEM_READONLY, SCOPE_SCORE
from tests.sandbox.canvas import (
    assert_not_found,
    assert_shape_a,
    bearer,
    line_item_url,
    media_type,
    post_score,
    score,
)
from tests.support.sandbox import RunningSandbox, ToolKey

CONCLUDED = "This course has concluded. AGS requests will no longer be accepted for this course."


def student(world: Scenario) -> str:
    return world.students[0].lti_id


async def test_score_without_a_token_is_missing_access_token(
    sandbox: RunningSandbox, world: Scenario, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        f"{line_item_url(sandbox, world)}/scores", json=score(student(world))
    )

    assert_shape_a(response, 401, "unauthorized", "Missing access token")


async def test_lowercase_bearer_reads_as_no_token(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        f"{line_item_url(sandbox, world)}/scores",
        json=score(student(world)),
        headers={"Authorization": f"bearer {token}"},
    )

    assert_shape_a(response, 401, "unauthorized", "Missing access token")


async def test_access_token_query_parameter_is_accepted(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        f"{line_item_url(sandbox, world)}/scores",
        params={"access_token": token},
        json=score(student(world)),
    )

    assert response.status_code == 200, response.text


async def test_token_that_is_not_a_jwt_is_an_invalid_format(
    sandbox: RunningSandbox, world: Scenario, http: httpx.AsyncClient
) -> None:
    response = await post_score(http, sandbox, world, "opaque-token", score(student(world)))

    assert_shape_a(response, 401, "unauthorized", "Invalid access token format")


async def test_token_with_a_tampered_payload_has_an_incorrect_signature(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    header, _, signature = token.split(".")
    claims = parse_compact(token).claims | {"scopes": "everything"}
    forged_payload = encode_unsigned(claims).split(".")[1]
    forged = f"{header}.{forged_payload}.{signature}"

    response = await post_score(http, sandbox, world, forged, score(student(world)))

    assert_shape_a(
        response, 401, "unauthorized", "Access token invalid - signature likely incorrect"
    )


async def test_unsigned_token_uses_a_disallowed_algorithm(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    unsigned = encode_unsigned(parse_compact(token).claims)

    response = await post_score(http, sandbox, world, unsigned, score(student(world)))

    assert_shape_a(response, 401, "unauthorized", "Access token signature algorithm not allowed")


async def test_token_past_its_hour_is_expired(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.clock.advance(3601)

    response = await post_score(http, sandbox, world, token, score(student(world)))

    assert_shape_a(response, 401, "unauthorized", "Access token expired")


async def test_token_missing_claims_lists_them(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    claims = parse_compact(token).claims
    del claims["jti"], claims["iss"]
    stripped = sign_hs256(claims, sandbox.state.access_token_secret)

    response = await post_score(http, sandbox, world, stripped, score(student(world)))

    assert_shape_a(
        response,
        401,
        "unauthorized",
        "Invalid access token field/s: the following assertions are missing: jti,iss",
    )


async def test_token_for_another_host_has_an_invalid_aud(
    sandbox: RunningSandbox, world: Scenario, http: httpx.AsyncClient
) -> None:
    foreign = issue_access_token(
        sandbox.state,
        client_id=world.client_id,
        scopes=[SCOPE_SCORE],
        audience="http://other-canvas.example/login/oauth2/token",
    )

    response = await post_score(http, sandbox, world, foreign, score(student(world)))

    assert_shape_a(
        response, 401, "unauthorized", "Invalid access token field/s: the 'aud' is invalid"
    )


async def test_token_for_the_universal_canvas_host_is_accepted(
    sandbox: RunningSandbox, world: Scenario, http: httpx.AsyncClient
) -> None:
    universal = issue_access_token(
        sandbox.state,
        client_id=world.client_id,
        scopes=[SCOPE_SCORE],
        audience="http://canvas.instructure.com/login/oauth2/token",
    )

    response = await post_score(http, sandbox, world, universal, score(student(world)))

    assert response.status_code == 200, response.text


async def test_token_issued_in_the_future_is_rejected(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    sandbox.clock.advance(120)
    token = await sandbox.access_token(tool_key, world.client_id)
    sandbox.clock.reset()

    response = await post_score(http, sandbox, world, token, score(student(world)))

    assert_shape_a(
        response,
        401,
        "unauthorized",
        "Invalid access token field/s: the 'iat' must not be in the future",
    )


async def test_deactivated_developer_key_is_unknown_or_inactive(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.state.update_developer_key(world.client_id, active=False)

    response = await post_score(http, sandbox, world, token, score(student(world)))

    assert_shape_a(response, 401, "unauthorized", "Unknown or inactive Developer Key")


async def test_token_without_the_score_scope_has_insufficient_permissions(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    read_only = await sandbox.access_token(tool_key, world.client_id, [SCOPE_LINEITEM_READONLY])

    response = await post_score(http, sandbox, world, read_only, score(student(world)))

    assert_shape_a(response, 401, "unauthorized", "Insufficient permissions")


async def test_unknown_course_is_not_found(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        sandbox.url(f"/api/lti/courses/424242/line_items/{world.line_item_id}/scores"),
        json=score(student(world)),
        headers=bearer(token),
    )

    assert_not_found(response)


async def test_key_not_enabled_in_the_account_is_an_invalid_developer_key(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.state.update_developer_key(world.client_id, enabled_in_account=False)

    response = await post_score(http, sandbox, world, token, score(student(world)))

    assert_shape_a(response, 401, "unauthorized", "Invalid Developer Key")


async def test_deleted_course_is_context_deleted_or_not_found(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.state.set_course_state(world.course_id, CourseState.DELETED)

    response = await post_score(http, sandbox, world, token, score(student(world)))

    assert_shape_a(response, 404, "not_found", "Context is deleted or not found")


async def test_course_without_the_tool_installed_rejects_the_token(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.state.uninstall_tool(world.course_id, world.client_id)

    response = await post_score(http, sandbox, world, token, score(student(world)))

    assert_shape_a(
        response,
        401,
        "unauthorized",
        "Access Token not linked to a Tool associated with this Context",
    )


async def test_concluded_course_is_unprocessable_with_the_improved_codes_flag(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.state.set_course_state(world.course_id, CourseState.CONCLUDED)

    response = await post_score(http, sandbox, world, token, score(student(world)))

    assert_shape_a(response, 422, "unprocessable_entity", CONCLUDED)


async def test_concluded_course_is_not_found_with_the_flag_off(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.set_flags(improved_concluded_response_codes=False)
    sandbox.state.set_course_state(world.course_id, CourseState.CONCLUDED)

    response = await post_score(http, sandbox, world, token, score(student(world)))

    assert_not_found(response)


async def test_unknown_line_item_is_not_found(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await post_score(
        http, sandbox, world, token, score(student(world)), line_item_id="999999"
    )

    assert_not_found(response)


async def test_line_item_of_another_course_is_not_found(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    other = sandbox.state.create_course(tools=[world.client_id])
    response = await http.post(
        sandbox.url(f"/api/lti/courses/{other.id}/line_items/{world.line_item_id}/scores"),
        json=score(student(world)),
        headers=bearer(token),
    )

    assert_not_found(response)


async def test_resource_link_id_of_another_link_is_a_precondition_failure(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    body = score(student(world), resourceLinkId="some-other-link")

    response = await post_score(http, sandbox, world, token, body)

    assert_shape_a(
        response,
        412,
        "precondition_failed",
        "The specified LTI link ID is not associated with the line item.",
    )


async def test_checks_run_in_canvas_order_scope_before_course(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    read_only = await sandbox.access_token(tool_key, world.client_id, [SCOPE_LINEITEM_READONLY])
    response = await http.post(
        sandbox.url(f"/api/lti/courses/424242/line_items/{world.line_item_id}/scores"),
        json=score(student(world)),
        headers=bearer(read_only),
    )

    assert_shape_a(response, 401, "unauthorized", "Insufficient permissions")


async def test_unknown_api_route_answers_canvas_not_found(
    sandbox: RunningSandbox, http: httpx.AsyncClient
) -> None:
    response = await http.get(sandbox.url("/api/lti/nothing/here"))

    assert_not_found(response)
    assert media_type(response) == "application/json"
