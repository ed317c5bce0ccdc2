"""Posting scores: checks, messages and gradebook effects (canvas-ags.md §3, §6 rows 13–24)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.sandbox import Scenario
from app.sandbox.models import EnrollmentState, GradingType
from app.sandbox.protocol import EXT_SUBMISSION, MEDIA_SCORE
from app.sandbox.views import submission_view
from tests.sandbox.canvas import (
    TIMESTAMP,
    assert_shape_a,
    assert_shape_b,
    bearer,
    line_item_url,
    media_type,
    post_score,
    score,
)
from tests.support.sandbox import RunningSandbox, ToolKey

LATER = "2026-11-20T14:05:00.000Z"
EARLIER = "2026-11-20T14:00:00.000Z"


def student(world: Scenario, index: int = 0) -> str:
    return world.students[index].lti_id


def cell(sandbox: RunningSandbox, world: Scenario, index: int = 0) -> dict[str, Any]:
    """The gradebook cell as the JSON API shows it (read in-process)."""
    submission = sandbox.state.submission(world.assignment_id, student(world, index))
    return submission_view(submission)


async def test_score_is_accepted_with_result_url_and_the_score_media_type(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await post_score(http, sandbox, world, token, score(student(world), 83, 100))

    assert response.status_code == 200
    assert media_type(response) == MEDIA_SCORE
    body = response.json()
    result = sandbox.state.result_of(world.line_item_id, world.students[0].user_id)
    assert result is not None
    assert body == {
        "resultUrl": f"{line_item_url(sandbox, world)}/results/{result.id}",
        EXT_SUBMISSION: {"content_items": []},
    }
    assert cell(sandbox, world)["score"] == "8.3"


@pytest.mark.parametrize(
    ("given", "maximum", "points", "canvas_score"),
    [
        (83, 100, 10, "8.3"),
        (7, 9, 27, "21"),
        (0.7, 1, 33, "23.1"),
        (2.5, 3, 12, "10"),
        (19.99, 20, 100, "99.95"),
        (150, 100, 10, "15"),
        (0, 10, 10, "0"),
    ],
)
async def test_score_is_scaled_to_the_line_item_maximum_exactly(
    sandbox: RunningSandbox,
    world: Scenario,
    token: str,
    http: httpx.AsyncClient,
    given: float,
    maximum: float,
    points: int,
    canvas_score: str,
) -> None:
    sandbox.state.set_assignment_points(world.assignment_id, points)

    response = await post_score(http, sandbox, world, token, score(student(world), given, maximum))

    assert response.status_code == 200, response.text
    assert cell(sandbox, world)["score"] == canvas_score


async def test_score_follows_points_changed_after_the_line_item_was_read(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.set_assignment_points(world.assignment_id, 20)

    response = await post_score(http, sandbox, world, token, score(student(world), 7, 10))

    assert response.status_code == 200
    assert cell(sandbox, world)["score"] == "14"


async def test_missing_user_id_is_unprocessable_not_a_missing_parameter(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    body = score(student(world))
    del body["userId"], body["timestamp"]

    response = await post_score(http, sandbox, world, token, body)

    assert_shape_a(
        response, 422, "unprocessable_entity", "User not found in course or is not a student"
    )


@pytest.mark.parametrize(
    "enrollment", [EnrollmentState.INACTIVE, EnrollmentState.COMPLETED, EnrollmentState.INVITED]
)
async def test_student_without_an_active_enrollment_is_not_a_student(
    sandbox: RunningSandbox,
    world: Scenario,
    token: str,
    http: httpx.AsyncClient,
    enrollment: EnrollmentState,
) -> None:
    sandbox.state.set_enrollment_state(world.course_id, student(world), enrollment)

    response = await post_score(http, sandbox, world, token, score(student(world)))

    assert_shape_a(
        response, 422, "unprocessable_entity", "User not found in course or is not a student"
    )


async def test_user_of_another_course_is_not_a_student(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    elsewhere = sandbox.state.create_course()
    outsider = sandbox.state.create_student(elsewhere.id)

    response = await post_score(http, sandbox, world, token, score(outsider.lti_id))

    assert_shape_a(
        response, 422, "unprocessable_entity", "User not found in course or is not a student"
    )


async def test_canvas_numeric_user_id_is_accepted(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await post_score(
        http, sandbox, world, token, score(world.students[0].user_id, 5, 10)
    )

    assert response.status_code == 200
    assert cell(sandbox, world)["score"] == "5"


async def test_body_canvas_cannot_parse_leaves_no_user(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        f"{line_item_url(sandbox, world)}/scores",
        content=b'{"userId": "x"}',
        headers={**bearer(token), "Content-Type": "text/plain"},
    )

    assert_shape_a(
        response, 422, "unprocessable_entity", "User not found in course or is not a student"
    )


@pytest.mark.parametrize("missing", ["activityProgress", "gradingProgress", "timestamp"])
async def test_missing_required_parameter_is_reported_by_name(
    sandbox: RunningSandbox,
    world: Scenario,
    token: str,
    http: httpx.AsyncClient,
    missing: str,
) -> None:
    body = score(student(world))
    del body[missing]

    response = await post_score(http, sandbox, world, token, body)

    assert_shape_b(response, 400, f"{missing} is missing")


async def test_unparseable_timestamp_is_rejected_with_canvas_message(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await post_score(
        http, sandbox, world, token, score(student(world), timestamp="yesterday-ish")
    )

    assert_shape_a(
        response, 400, "bad_request", "Provided timestamp of yesterday-ish not a valid timestamp"
    )


async def test_lenient_timestamp_passes_unless_iso8601_is_enforced(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    lenient = score(student(world), timestamp="2026-11-20 14:03:11")
    assert (await post_score(http, sandbox, world, token, lenient)).status_code == 200

    await sandbox.admin.set_flags(enforce_iso8601_for_lti_scores=True)
    strict = score(student(world), timestamp="2026-11-20 14:09:00")
    response = await post_score(http, sandbox, world, token, strict)

    assert_shape_a(
        response,
        400,
        "bad_request",
        "Provided timestamp of 2026-11-20 14:09:00 not a valid timestamp",
    )


async def test_score_with_stale_timestamp_is_rejected_with_canvas_message(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    newer = score(student(world), 9, 10, timestamp="2026-11-20T14:05:00.123456+00:00")
    assert (await post_score(http, sandbox, world, token, newer)).status_code == 200

    response = await post_score(
        http, sandbox, world, token, score(student(world), 5, 10, timestamp=EARLIER)
    )

    assert_shape_a(
        response,
        400,
        "bad_request",
        f"Provided timestamp of {EARLIER} before last updated timestamp of "
        "2026-11-20T14:05:00.123Z",
    )
    assert cell(sandbox, world)["score"] == "9"


async def test_score_with_an_equal_timestamp_is_accepted_again(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    first = await post_score(http, sandbox, world, token, score(student(world), 6, 10))
    again = await post_score(http, sandbox, world, token, score(student(world), 8, 10))

    assert (first.status_code, again.status_code) == (200, 200)
    assert cell(sandbox, world)["score"] == "8"


async def test_a_moodle_like_platform_keeps_whole_seconds_and_refuses_an_equal_second(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.set_flags(whole_second_timestamps=True)
    first = score(student(world), 7, 10, timestamp="2026-11-20T14:05:00.100Z")
    same_second = score(student(world), 10, 10, timestamp="2026-11-20T14:05:00.900Z")
    next_second = score(student(world), 10, 10, timestamp="2026-11-20T14:05:01.000Z")

    assert (await post_score(http, sandbox, world, token, first)).status_code == 200
    refused = await post_score(http, sandbox, world, token, same_second)
    assert refused.status_code == 409
    assert cell(sandbox, world)["score"] == "7"
    assert (await post_score(http, sandbox, world, token, next_second)).status_code == 200
    assert cell(sandbox, world)["score"] == "10"


async def test_score_with_a_future_timestamp_is_accepted(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    future = score(student(world), timestamp="2099-01-01T00:00:00.000Z")

    assert (await post_score(http, sandbox, world, token, future)).status_code == 200


async def test_score_given_without_score_maximum_is_unprocessable(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await post_score(http, sandbox, world, token, score(student(world), 7, None))

    assert_shape_a(
        response, 422, "unprocessable_entity", "ScoreMaximum not supplied when ScoreGiven present."
    )


async def test_negative_score_maximum_is_unprocessable(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await post_score(http, sandbox, world, token, score(student(world), 7, -10))

    assert_shape_a(
        response, 422, "unprocessable_entity", "ScoreMaximum must be greater than or equal to 0"
    )


async def test_zero_score_maximum_for_a_line_item_with_points_is_unprocessable(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await post_score(http, sandbox, world, token, score(student(world), 7, 0))

    assert_shape_a(
        response,
        422,
        "unprocessable_entity",
        "cannot be zero if line item's maximum is not zero",
    )


async def test_zero_point_assignment_takes_zero_maximum_unscaled(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.state.set_assignment_points(world.assignment_id, 0)

    response = await post_score(http, sandbox, world, token, score(student(world), 7, 0))

    assert response.status_code == 200
    assert cell(sandbox, world)["score"] == "7"


async def test_zero_point_assignment_grades_zero_from_a_real_maximum(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.state.set_assignment_points(world.assignment_id, 0)

    response = await post_score(http, sandbox, world, token, score(student(world), 7, 10))

    assert response.status_code == 200
    assert cell(sandbox, world)["score"] == "0"


async def test_negative_score_given_is_unprocessable(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    response = await post_score(http, sandbox, world, token, score(student(world), -1, 10))

    assert_shape_a(
        response, 422, "unprocessable_entity", "ScoreGiven must be greater than or equal to 0"
    )


async def test_unparseable_submitted_at_is_rejected(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    body = score(student(world), submission={"submittedAt": "someday"})

    response = await post_score(http, sandbox, world, token, body)

    assert_shape_a(
        response,
        400,
        "bad_request",
        "Provided submitted_at timestamp of someday not a valid timestamp",
    )


async def test_submitted_at_more_than_a_minute_ahead_is_rejected(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    ahead = "2099-01-01T00:00:00.000Z"
    body = score(student(world), extension={"submitted_at": ahead})

    response = await post_score(http, sandbox, world, token, body)

    assert_shape_a(
        response, 400, "bad_request", f"Provided submitted_at timestamp of {ahead} in the future"
    )


async def test_online_upload_without_files_is_unprocessable(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    body = score(student(world), extension={"submission_type": "online_upload"})

    response = await post_score(http, sandbox, world, token, body)

    assert_shape_a(
        response,
        422,
        "unprocessable_entity",
        "Content items must be provided with submission type 'online_upload'",
    )


async def test_invalid_grading_progress_fails_model_validation_after_the_attempt(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    body = score(student(world), gradingProgress="Graded")

    response = await post_score(http, sandbox, world, token, body)

    assert response.status_code == 422
    assert media_type(response) == "application/json"
    assert response.json() == {
        "errors": [
            {
                "field": "grading_progress",
                "message": "is not included in the list",
                "error_code": "inclusion",
            }
        ]
    }
    after = cell(sandbox, world)
    assert (after["attempt"], after["score"]) == (1, None)


async def test_every_post_is_a_new_attempt_by_default(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    for given in (5, 6, 7):
        response = await post_score(http, sandbox, world, token, score(student(world), given))
        assert response.status_code == 200

    assert cell(sandbox, world)["attempt"] == 3


async def test_new_submission_false_grades_without_a_new_attempt(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    first = score(student(world), 5, extension={"new_submission": True})
    update = score(student(world), 9, extension={"new_submission": False})

    await post_score(http, sandbox, world, token, first)
    response = await post_score(http, sandbox, world, token, update)

    assert response.status_code == 200
    assert (cell(sandbox, world)["attempt"], cell(sandbox, world)["score"]) == (1, "9")


async def test_new_submission_past_the_attempt_limit_is_rejected(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.state.set_allowed_attempts(world.assignment_id, 1)
    assert (
        await post_score(http, sandbox, world, token, score(student(world), 5))
    ).status_code == 200

    again = await post_score(http, sandbox, world, token, score(student(world), 9))
    update = score(student(world), 9, extension={"new_submission": "false"})
    without_attempt = await post_score(http, sandbox, world, token, update)

    assert_shape_a(
        again,
        422,
        "unprocessable_entity",
        "The maximum number of allowed attempts has been reached for this submission",
    )
    assert without_attempt.status_code == 200
    assert (cell(sandbox, world)["attempt"], cell(sandbox, world)["score"]) == (1, "9")


async def test_each_post_with_a_comment_adds_one_comment(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    for _ in range(2):
        body = score(student(world), comment="Well done")
        assert (await post_score(http, sandbox, world, token, body)).status_code == 200
    await post_score(http, sandbox, world, token, score(student(world)))

    comments = [entry["comment"] for entry in cell(sandbox, world)["comments"]]
    assert comments == ["Well done", "Well done"]


@pytest.mark.parametrize(
    "reset",
    [
        {"gradingProgress": "Pending"},
        {"gradingProgress": "Failed"},
        {"scoreGiven": None},
    ],
)
async def test_reset_post_clears_a_passed_back_grade(
    sandbox: RunningSandbox,
    world: Scenario,
    token: str,
    http: httpx.AsyncClient,
    reset: dict[str, Any],
) -> None:
    await post_score(http, sandbox, world, token, score(student(world), 8))
    body = {**score(student(world), 8, timestamp=LATER), **reset}
    body = {name: value for name, value in body.items() if value is not None}

    response = await post_score(http, sandbox, world, token, body)

    assert response.status_code == 200, response.text
    assert cell(sandbox, world)["score"] is None


async def test_preserve_score_keeps_the_grade_even_when_fully_graded(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await post_score(http, sandbox, world, token, score(student(world), 8))
    pending = score(student(world), None, None, gradingProgress="Pending", timestamp=LATER)
    pending[EXT_SUBMISSION] = {"preserve_score": True}
    graded = score(student(world), 2, timestamp=LATER, extension={"preserve_score": "true"})

    assert (await post_score(http, sandbox, world, token, pending)).status_code == 200
    assert (await post_score(http, sandbox, world, token, graded)).status_code == 200

    assert cell(sandbox, world)["score"] == "8"


async def test_prioritize_non_tool_grade_keeps_the_teachers_grade(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.state.grade_as_teacher(world.assignment_id, student(world), 9.5)
    body = score(student(world), 3, extension={"prioritize_non_tool_grade": True})

    response = await post_score(http, sandbox, world, token, body)

    assert response.status_code == 200
    assert (cell(sandbox, world)["score"], cell(sandbox, world)["grader"]) == ("9.5", "teacher")


async def test_pending_manual_grades_and_flags_the_submission_for_review(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    body = score(student(world), 6, gradingProgress="PendingManual")

    assert (await post_score(http, sandbox, world, token, body)).status_code == 200

    after = cell(sandbox, world)
    assert (after["score"], after["needs_review"], after["workflow_state"]) == (
        "6",
        True,
        "pending_review",
    )


async def test_pass_fail_assignment_grades_complete(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    assignment = sandbox.state.create_assignment(
        world.course_id, points=5, grading_type=GradingType.PASS_FAIL
    )
    primary = sandbox.state.primary_line_item(assignment.id)
    assert primary is not None

    response = await post_score(
        http, sandbox, world, token, score(student(world), 1, 10), line_item_id=primary.id
    )

    assert response.status_code == 200
    submission = sandbox.state.submission(assignment.id, student(world))
    assert submission is not None
    assert (submission.grade, submission.score) == ("complete", Decimal(5))


async def test_submission_type_data_and_time_are_stored_for_speedgrader(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    extension = {
        "new_submission": True,
        "submission_type": "basic_lti_launch",
        "submission_data": "https://formative.example/r/abc",
        "submitted_at": "2026-11-20T14:03:10.900Z",
    }
    body = score(student(world), extension=extension)

    assert (await post_score(http, sandbox, world, token, body)).status_code == 200

    after = cell(sandbox, world)
    assert after["submission_type"] == "basic_lti_launch"
    assert after["url"] == "https://formative.example/r/abc"
    assert after["submitted_at"] == "2026-11-20T14:03:10.900000+00:00"
    assert after["grader"] == f"tool:{world.client_id}"


async def test_submission_submitted_at_takes_precedence_over_the_extension(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    body = score(
        student(world),
        submission={"submittedAt": "2026-11-20T10:00:00Z"},
        extension={"submitted_at": "2026-11-20T11:00:00Z"},
    )

    assert (await post_score(http, sandbox, world, token, body)).status_code == 200

    assert cell(sandbox, world)["submitted_at"] == "2026-11-20T10:00:00+00:00"


async def test_file_content_items_make_an_upload_and_come_back_with_progress(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    item = {"type": "file", "url": "https://tool.example/f.pdf", "title": "f.pdf"}
    body = score(student(world), extension={"content_items": [item]})

    response = await post_score(http, sandbox, world, token, body)

    assert response.status_code == 200
    (echoed,) = response.json()[EXT_SUBMISSION]["content_items"]
    assert echoed["url"] == item["url"]
    assert echoed["progress"].startswith(sandbox.url(f"/api/lti/courses/{world.course_id}/"))
    assert cell(sandbox, world)["submission_type"] == "online_upload"


async def test_score_on_an_extra_line_item_is_stored_but_does_not_grade(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    assignment = sandbox.state.assignment(world.assignment_id)
    extra = sandbox.state.add_line_item(
        assignment, label="Extra", client_id=world.client_id, coupled=False
    )

    response = await post_score(
        http, sandbox, world, token, score(student(world), 9), line_item_id=extra.id
    )

    assert response.status_code == 200
    assert sandbox.state.result_of(extra.id, world.students[0].user_id) is not None
    assert (cell(sandbox, world)["score"], cell(sandbox, world)["attempt"]) == (None, 0)


async def test_score_on_a_deleted_assignment_is_not_found(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.delete_assignment(world.assignment_id)

    response = await post_score(http, sandbox, world, token, score(student(world)))

    assert_shape_b(response, 404, "The specified resource does not exist.")


async def test_scores_carry_no_ownership_check(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    other_key = sandbox.state.create_developer_key(public_jwk=tool_key.public_jwk())
    sandbox.state.install_tool(world.course_id, other_key.client_id)
    other_token = await sandbox.access_token(tool_key, other_key.client_id)

    response = await post_score(http, sandbox, world, other_token, score(student(world), 4))

    assert response.status_code == 200
    assert cell(sandbox, world)["score"] == "4"


async def test_form_encoded_score_is_understood(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    fields = {key: str(value) for key, value in score(student(world), "6.5", "10").items()}

    response = await http.post(
        f"{line_item_url(sandbox, world)}/scores", data=fields, headers=bearer(token)
    )

    assert response.status_code == 200
    assert cell(sandbox, world)["score"] == "6.5"


async def test_timestamp_and_result_keep_what_was_sent_unscaled(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await post_score(http, sandbox, world, token, score(student(world), 83, 100))

    result = sandbox.state.result_of(world.line_item_id, world.students[0].user_id)

    assert result is not None
    assert (result.score_given, result.score_maximum) == (Decimal(83), Decimal(100))
    assert result.updated_at.isoformat() == "2026-11-20T14:03:11.250000+00:00"
    assert TIMESTAMP.startswith("2026-11-20T14:03:11.250")


async def test_pending_score_without_maximum_fails_result_validation(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    body = score(student(world), 7, None, gradingProgress="Pending")

    response = await post_score(http, sandbox, world, token, body)

    assert response.status_code == 422
    assert media_type(response) == "application/json"
    assert response.json() == {
        "errors": [{"field": "result_maximum", "message": "can't be blank", "error_code": "blank"}]
    }
