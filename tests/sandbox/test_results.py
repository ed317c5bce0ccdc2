"""Results (canvas-ags.md §4.4, §6 rows 12 and 31)."""

from __future__ import annotations

import httpx

from app.sandbox import Scenario
from app.sandbox.protocol import EXT_SUBMISSION, MEDIA_RESULT_CONTAINER, SCOPE_SCORE
from tests.sandbox.canvas import (
    assert_not_found,
    assert_shape_a,
    bearer,
    foreign_assignment,
    line_item_url,
    media_type,
    post_score,
    score,
)
from tests.support.sandbox import RunningSandbox, ToolKey


async def scored(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    for index, given in enumerate((83, 41)):
        body = score(
            world.students[index].lti_id,
            given,
            100,
            comment="Nice",
            extension={"new_submission": False},
        )
        assert (await post_score(http, sandbox, world, token, body)).status_code == 200


async def test_results_list_every_result_with_lti_user_ids_and_unscaled_scores(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await scored(sandbox, world, token, http)

    response = await http.get(f"{line_item_url(sandbox, world)}/results", headers=bearer(token))

    assert response.status_code == 200
    assert media_type(response) == MEDIA_RESULT_CONTAINER
    first, second = response.json()
    assert first["scoreOf"] == line_item_url(sandbox, world)
    assert first["id"].startswith(f"{line_item_url(sandbox, world)}/results/")
    assert (first["userId"], first["resultScore"], first["resultMaximum"]) == (
        world.students[0].lti_id,
        83.0,
        100.0,
    )
    assert first["comment"] == "Nice"
    assert first[EXT_SUBMISSION] == {"new_submission": False}
    assert second["userId"] == world.students[1].lti_id


async def test_results_filtered_by_user_id_hold_at_most_that_student(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await scored(sandbox, world, token, http)
    url = f"{line_item_url(sandbox, world)}/results"

    by_lti_id = await http.get(
        url, params={"user_id": world.students[1].lti_id}, headers=bearer(token)
    )
    by_canvas_id = await http.get(
        url, params={"user_id": world.students[1].user_id}, headers=bearer(token)
    )
    nobody = await http.get(url, params={"user_id": "not-a-student"}, headers=bearer(token))

    assert [r["resultScore"] for r in by_lti_id.json()] == [41.0]
    assert [r["userId"] for r in by_canvas_id.json()] == [world.students[1].lti_id]
    assert nobody.json() == []


async def test_result_show_answers_one_result(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await scored(sandbox, world, token, http)
    listed = await http.get(f"{line_item_url(sandbox, world)}/results", headers=bearer(token))
    url = listed.json()[0]["id"]

    response = await http.get(url, headers=bearer(token))

    assert response.status_code == 200
    assert media_type(response) == MEDIA_RESULT_CONTAINER
    assert response.json() == listed.json()[0]


async def test_result_of_another_line_item_is_not_found(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await scored(sandbox, world, token, http)
    result = sandbox.state.result_of(world.line_item_id, world.students[0].user_id)
    assert result is not None
    other = sandbox.state.create_assignment(world.course_id)
    primary = sandbox.state.primary_line_item(other.id)
    assert primary is not None

    response = await http.get(
        f"{line_item_url(sandbox, world, primary.id)}/results/{result.id}", headers=bearer(token)
    )

    assert_not_found(response)


async def test_result_show_on_another_tools_line_item_is_a_precondition_failure(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    _, primary = foreign_assignment(sandbox, world)

    response = await http.get(
        f"{line_item_url(sandbox, world, primary.id)}/results/1", headers=bearer(token)
    )
    index = await http.get(
        f"{line_item_url(sandbox, world, primary.id)}/results", headers=bearer(token)
    )

    assert_shape_a(
        response, 412, "precondition_failed", "Tool does not have permission to view line_item"
    )
    assert index.status_code == 200


async def test_results_need_the_result_scope(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    score_only = await sandbox.access_token(tool_key, world.client_id, [SCOPE_SCORE])

    response = await http.get(
        f"{line_item_url(sandbox, world)}/results", headers=bearer(score_only)
    )

    assert_shape_a(response, 401, "unauthorized", "Insufficient permissions")


async def test_teacher_regrade_shows_rescaled_in_result_score(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await scored(sandbox, world, token, http)
    sandbox.state.grade_as_teacher(world.assignment_id, world.students[0].lti_id, 9)

    response = await http.get(
        f"{line_item_url(sandbox, world)}/results",
        params={"user_id": world.students[0].lti_id},
        headers=bearer(token),
    )

    assert response.json()[0]["resultScore"] == 90.0
