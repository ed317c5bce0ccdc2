"""The gradebook a teacher would see, the admin API, the request log, and the demo seed."""

from __future__ import annotations

import httpx
import pytest

from app.sandbox import SandboxConfig, SandboxState, Scenario, seed_demo
from tests.sandbox.canvas import bearer, post_score, score
from tests.support.sandbox import RunningSandbox, ToolKey


async def test_gradebook_shows_score_attempts_submission_and_comments(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    extension = {
        "submission_type": "basic_lti_launch",
        "submission_data": "https://formative.example/r/abc",
        "submitted_at": "2026-11-20T14:03:10.900Z",
    }
    body = score(world.students[0].lti_id, 83, 100, comment="Good", extension=extension)
    assert (await post_score(http, sandbox, world, token, body)).status_code == 200

    gradebook = await sandbox.admin.gradebook(world.course_id)

    assert gradebook["course"]["id"] == world.course_id
    (assignment,) = gradebook["assignments"]
    assert (assignment["points_possible"], assignment["id"]) == ("10", world.assignment_id)
    graded, untouched, _ = assignment["submissions"]
    assert graded["lti_id"] == world.students[0].lti_id
    assert (graded["score"], graded["attempt"], graded["workflow_state"]) == ("8.3", 1, "graded")
    assert graded["submission_type"] == "basic_lti_launch"
    assert graded["url"] == "https://formative.example/r/abc"
    assert graded["submitted_at"] == "2026-11-20T14:03:10.900000+00:00"
    assert graded["grader"] == f"tool:{world.client_id}"
    assert [c["comment"] for c in graded["comments"]] == ["Good"]
    assert (untouched["score"], untouched["attempt"]) == (None, 0)


async def test_gradebook_page_lists_students_and_scores(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await post_score(http, sandbox, world, token, score(world.students[0].lti_id, 7, 10))

    response = await http.get(sandbox.url(f"/sandbox/gradebook/courses/{world.course_id}/html"))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert world.students[0].name in response.text and "<td>7</td>" in response.text


async def test_gradebook_of_an_unknown_course_is_not_found(
    sandbox: RunningSandbox, http: httpx.AsyncClient
) -> None:
    response = await http.get(sandbox.url("/sandbox/gradebook/courses/nope"))

    assert response.status_code == 404


async def test_admin_api_seeds_a_world_a_tool_can_grade_in(
    sandbox: RunningSandbox, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    key = await sandbox.admin.create_developer_key(public_jwk=tool_key.public_jwk())
    course = await sandbox.admin.create_course(name="Algebra", tools=[key["client_id"]])
    assignment = await sandbox.admin.create_assignment(
        course["id"], name="Quiz", points=4, allowed_attempts=2
    )
    learner = await sandbox.admin.create_student(course["id"], name="Ada Lovelace")
    token = await sandbox.access_token(tool_key, key["client_id"])

    response = await http.post(
        assignment["line_item_url"] + "/scores",
        json=score(learner["lti_id"], 3, 4),
        headers=bearer(token),
    )

    assert response.status_code == 200
    cell = await sandbox.admin.submission(assignment["id"], learner["lti_id"])
    assert (cell["score"], cell["attempt"]) == ("3", 1)
    assert await sandbox.admin.token_grants(key["client_id"]) == 1


async def test_admin_scenario_returns_what_a_registration_needs(
    sandbox: RunningSandbox, tool_key: ToolKey
) -> None:
    world = await sandbox.admin.scenario(tool_jwk=tool_key.public_jwk(), students=["Ada", "Bo"])

    assert world["token_url"] == sandbox.token_url
    assert world["jwks_url"] == sandbox.jwks_url
    assert world["issuer"] == sandbox.issuer
    assert [s["name"] for s in world["students"]] == ["Ada", "Bo"]
    assert world["line_item_url"].endswith(f"/line_items/{world['line_item_id']}")


async def test_admin_answers_404_for_unknown_records(sandbox: RunningSandbox) -> None:
    with pytest.raises(httpx.HTTPStatusError) as missing:
        await sandbox.admin.create_assignment("no-such-course", client_id="x")

    assert missing.value.response.status_code == 404


async def test_request_log_keeps_bodies_and_headers_but_never_authorization(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.clear_requests()
    await post_score(http, sandbox, world, token, score(world.students[0].lti_id, 5))

    (entry,) = await sandbox.admin.requests(path_contains="/scores", method="POST")

    assert entry["status"] == 200
    assert '"scoreGiven":5' in entry["request_body"].replace(" ", "")
    assert "resultUrl" in entry["response_body"]
    assert "authorization" not in entry["request_headers"]
    assert token not in str(entry)
    assert entry["request_headers"]["content-type"] == "application/vnd.ims.lis.v1.score+json"


async def test_admin_pages_are_not_logged_and_reset_empties_everything(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.add_fault("error")
    await sandbox.admin.gradebook(world.course_id)

    await sandbox.admin.reset()

    assert sandbox.state.courses == {}
    assert (await sandbox.admin.set_faults())["rules"] == []
    assert await sandbox.admin.requests() == []


async def test_urls_follow_the_host_the_client_called(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    origin = f"http://localhost:{sandbox.server.port}"

    response = await http.get(
        f"{origin}/api/lti/courses/{world.course_id}/line_items", headers=bearer(token)
    )

    # The token's audience is the configured base URL (127.0.0.1), accepted on every host.
    assert response.status_code == 200
    assert response.json()[0]["id"].startswith(f"{origin}/api/lti/courses/")
    assert response.headers["link"].startswith(f"<{origin}/")


def test_seed_demo_returns_a_platform_registration_on_the_base_url() -> None:
    state = SandboxState(SandboxConfig(base_url="http://127.0.0.1:8001"))

    demo = seed_demo(state, tool_jwks_url="http://127.0.0.1:8000/.well-known/jwks.json")

    registration = demo.platform_registration()
    assert registration["issuer"] == "http://127.0.0.1:8001"
    assert registration["token_url"] == "http://127.0.0.1:8001/login/oauth2/token"
    assert registration["jwks_url"] == "http://127.0.0.1:8001/api/lti/security/jwks"
    assert registration["allowed_hosts"] == ["127.0.0.1"]
    assert registration["deployment_ids"] == [demo.deployment_id]
    assert demo.line_item_url.startswith(demo.line_items_url + "/")
    assert len(demo.students) == 3
    key = state.developer_key(demo.client_id)
    assert key.public_jwk_url == "http://127.0.0.1:8000/.well-known/jwks.json"
    assert state.assignment(demo.assignment_id).points_possible == 10
