"""Submission events: strict intake, the automatic-passback decision, idempotency."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.context import AppContext
from app.store.models import Formative, PassbackJob, StudentWork, SubmissionEvent
from tests.api.canvas_world import (
    ADMIN,
    DROP,
    EVENTS,
    SUBMITTED_EVENT,
    CanvasWorld,
    canvas_world,
    event,
    launch_from_canvas,
)
from tests.support.poison import POISON_TIMES
from tests.support.sandbox import (  # noqa: F401  (fixtures)
    RunningSandbox,
    ToolKey,
    sandbox_fixture,
    sandbox_server_fixture,
    tool_key_fixture,
)


async def post_event(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/v1/submission-events", json=body, headers=EVENTS)


def reason_codes(response: httpx.Response) -> list[str]:
    return [reason["code"] for reason in response.json()["reasons"]]


async def jobs_of(context: AppContext) -> list[PassbackJob]:
    async with context.sessions() as session:
        return list((await session.scalars(select(PassbackJob).order_by(PassbackJob.id))).all())


async def work_of(context: AppContext, student_id: str = "s-1") -> StudentWork | None:
    async with context.sessions() as session:
        return await session.get(StudentWork, ("fm-42", student_id))


@pytest.fixture
async def world(
    client: httpx.AsyncClient, sandbox: RunningSandbox, tool_key: ToolKey
) -> CanvasWorld:
    return await canvas_world(client, sandbox, tool_jwk=tool_key.public_jwk(), students=3)


@pytest.fixture
async def launched(
    client: httpx.AsyncClient, sandbox: RunningSandbox, world: CanvasWorld
) -> CanvasWorld:
    """Student s-1 opened formative fm-42 from the Canvas assignment."""
    await launch_from_canvas(client, sandbox, world, student_id="s-1")
    return world


async def test_a_first_full_submission_from_canvas_is_queued_for_passback(
    client: httpx.AsyncClient, context: AppContext, launched: CanvasWorld
) -> None:
    response = await post_event(client, SUBMITTED_EVENT)

    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["event_id"] == "evt-7f3a"
    assert answer["decision"] == "queued"
    assert answer["reasons"] == []
    [job] = await jobs_of(context)
    assert answer["job_id"] == job.id
    assert job.kind == "automatic"
    assert job.status == "pending"
    assert job.platform_id == launched.platform["id"]
    assert job.lineitem_url == launched.line_item_url
    assert job.lti_user_id == launched.lti_id(0)
    assert (job.formative_id, job.student_id, job.class_id) == ("fm-42", "s-1", "c-3")
    assert (job.score, job.max_score) == (Decimal(7), Decimal(10))
    assert job.score_timestamp.isoformat() == "2026-11-20T14:03:11.250000+00:00"
    assert job.submitted_at is not None
    assert job.submitted_at.isoformat() == "2026-11-20T14:03:10.900000+00:00"
    assert job.response_url == "https://formative.example/r/abc"
    assert job.event_id == "evt-7f3a"
    assert job.new_submission is True


async def test_a_submission_by_a_teacher_for_the_student_is_queued(
    client: httpx.AsyncClient, launched: CanvasWorld
) -> None:
    response = await post_event(client, event(submitted_by="teacher"))
    assert response.json()["decision"] == "queued"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"organization.license": "teacher_pro"}, ["license_required"]),
        ({"formative.auto_passback": False}, ["auto_passback_off"]),
        (
            {
                "formative.questions": [
                    {"id": "q1", "points": 2, "grading": "auto"},
                    {"id": "q2", "points": 3, "grading": "manual"},
                ]
            },
            ["manual_grading_required"],
        ),
        (
            {"formative.questions": [{"id": "q1", "points": 4, "grading": "rubric"}]},
            ["manual_grading_required"],
        ),
        ({"attempt": 2}, ["not_first_attempt"]),
        (
            {"type": "started", "submitted_at": DROP, "submitted_by": DROP},
            ["not_submitted"],
        ),
        ({"type": "updated", "cause": "answer_completed"}, ["changed_after_submission"]),
        ({"type": "updated", "cause": "answer_edited"}, ["changed_after_submission"]),
        ({"type": "updated", "cause": "teacher_adjusted"}, ["changed_after_submission"]),
        ({"type": "updated", "cause": "answer_key_changed"}, ["changed_after_submission"]),
        ({"type": "updated", "cause": "points_changed"}, ["changed_after_submission"]),
        (
            {"organization.license": "free", "formative.auto_passback": False, "attempt": 3},
            ["license_required", "auto_passback_off", "not_first_attempt"],
        ),
    ],
)
async def test_an_ineligible_event_sends_nothing_and_says_why(
    client: httpx.AsyncClient,
    context: AppContext,
    launched: CanvasWorld,
    changes: dict[str, Any],
    expected: list[str],
) -> None:
    response = await post_event(client, event(**changes))

    assert response.status_code == 202, response.text
    assert response.json()["decision"] == "not_eligible"
    assert response.json()["job_id"] is None
    assert reason_codes(response) == expected
    assert all(reason["message"] for reason in response.json()["reasons"])
    assert await jobs_of(context) == []


async def test_a_student_who_never_launched_from_canvas_is_not_passed_back(
    client: httpx.AsyncClient, context: AppContext, world: CanvasWorld
) -> None:
    response = await post_event(client, SUBMITTED_EVENT)
    assert reason_codes(response) == ["not_launched_from_lms"]
    assert await jobs_of(context) == []


async def test_a_launch_from_the_course_navigation_is_not_an_assignment(
    client: httpx.AsyncClient, sandbox: RunningSandbox, context: AppContext, world: CanvasWorld
) -> None:
    await launch_from_canvas(client, sandbox, world, from_assignment=False)
    response = await post_event(client, SUBMITTED_EVENT)
    assert reason_codes(response) == ["not_a_canvas_assignment"]
    assert await jobs_of(context) == []


async def test_a_deactivated_platform_is_not_registered(
    client: httpx.AsyncClient, context: AppContext, launched: CanvasWorld
) -> None:
    await client.delete(f"/v1/platforms/{launched.platform['id']}", headers=ADMIN)
    response = await post_event(client, SUBMITTED_EVENT)
    assert reason_codes(response) == ["platform_not_registered"]
    assert await jobs_of(context) == []


async def test_only_the_first_submission_is_passed_back_automatically(
    client: httpx.AsyncClient, context: AppContext, launched: CanvasWorld
) -> None:
    first = await post_event(client, SUBMITTED_EVENT)
    again = await post_event(
        client, event(event_id="evt-again", occurred_at="2026-11-20T15:00:00Z", score=9)
    )

    assert first.json()["decision"] == "queued"
    assert reason_codes(again) == ["already_passed_back"]
    assert len(await jobs_of(context)) == 1


async def test_an_ineligible_event_still_updates_what_the_service_knows(
    client: httpx.AsyncClient, context: AppContext, launched: CanvasWorld
) -> None:
    await post_event(client, SUBMITTED_EVENT)
    adjusted = event(
        event_id="evt-adjust",
        type="updated",
        cause="teacher_adjusted",
        occurred_at="2026-11-21T09:00:00Z",
        score=8.5,
        response_url=DROP,
    )
    response = await post_event(client, adjusted)

    assert reason_codes(response) == ["already_passed_back", "changed_after_submission"]
    work = await work_of(context)
    assert work is not None
    assert (work.score, work.max_score, work.submitted, work.attempt) == (
        Decimal("8.5"),
        Decimal(10),
        True,
        1,
    )
    assert work.response_url == "https://formative.example/r/abc"
    async with context.sessions() as session:
        formative = await session.get(Formative, "fm-42")
    assert formative is not None
    assert (formative.title, formative.license, formative.teacher_ids) == (
        "Fractions quiz",
        "school_district",
        ["t-1"],
    )
    assert formative.auto_passback is True and formative.all_auto_graded is True


async def test_an_older_event_arriving_late_does_not_overwrite_newer_facts(
    client: httpx.AsyncClient, context: AppContext, world: CanvasWorld
) -> None:
    await post_event(client, SUBMITTED_EVENT)
    late_start = event(
        event_id="evt-start",
        type="started",
        occurred_at="2026-11-20T13:00:00Z",
        submitted_at=DROP,
        submitted_by=DROP,
        score=0,
        **{"formative.title": "Old title"},
    )
    response = await post_event(client, late_start)

    assert response.status_code == 202
    work = await work_of(context)
    assert work is not None
    assert (work.score, work.submitted) == (Decimal(7), True)
    async with context.sessions() as session:
        formative = await session.get(Formative, "fm-42")
    assert formative is not None and formative.title == "Fractions quiz"


async def test_scores_keep_every_digit_sent(
    client: httpx.AsyncClient, context: AppContext, launched: CanvasWorld
) -> None:
    raw = (
        json.dumps(SUBMITTED_EVENT)
        .replace('"score": 7', '"score": 0.123456789012')
        .replace('"max_score": 10', '"max_score": 12345678901234567.3')
    )
    response = await client.post(
        "/v1/submission-events",
        content=raw,
        headers={**EVENTS, "content-type": "application/json"},
    )

    assert response.status_code == 202, response.text
    [job] = await jobs_of(context)
    assert job.score == Decimal("0.123456789012")
    assert job.max_score == Decimal("12345678901234567.3")
    work = await work_of(context)
    assert work is not None and work.score == Decimal("0.123456789012")


async def test_a_repeated_event_gets_the_first_answer_byte_for_byte(
    client: httpx.AsyncClient, context: AppContext, launched: CanvasWorld
) -> None:
    first = await post_event(client, SUBMITTED_EVENT)
    repeat = await post_event(client, SUBMITTED_EVENT)

    assert (first.status_code, repeat.status_code) == (202, 200)
    assert repeat.content == first.content
    assert repeat.headers["content-type"] == "application/json"
    assert len(await jobs_of(context)) == 1


async def test_a_repeat_is_answered_as_the_first_time_even_after_things_changed(
    client: httpx.AsyncClient, sandbox: RunningSandbox, context: AppContext, world: CanvasWorld
) -> None:
    first = await post_event(client, SUBMITTED_EVENT)
    await launch_from_canvas(client, sandbox, world)  # now the student has a launch
    repeat = await post_event(client, SUBMITTED_EVENT)

    assert reason_codes(first) == ["not_launched_from_lms"]
    assert repeat.status_code == 200
    assert repeat.content == first.content
    assert await jobs_of(context) == []


async def test_concurrent_repeats_get_one_answer_and_queue_one_job(
    client: httpx.AsyncClient, context: AppContext, launched: CanvasWorld
) -> None:
    answers = await asyncio.gather(*(post_event(client, SUBMITTED_EVENT) for _ in range(8)))

    assert sorted(answer.status_code for answer in answers) == [200] * 7 + [202]
    assert len({answer.content for answer in answers}) == 1
    assert answers[0].json()["decision"] == "queued"
    assert len(await jobs_of(context)) == 1
    async with context.sessions() as session:
        recorded = (await session.scalars(select(SubmissionEvent))).all()
    assert len(recorded) == 1


async def test_concurrent_submissions_of_one_student_queue_a_single_automatic_passback(
    client: httpx.AsyncClient, context: AppContext, launched: CanvasWorld
) -> None:
    bodies = [event(event_id=f"evt-{n}") for n in range(6)]
    answers = await asyncio.gather(*(post_event(client, body) for body in bodies))

    assert all(answer.status_code == 202 for answer in answers)
    decisions = sorted(answer.json()["decision"] for answer in answers)
    assert decisions == ["not_eligible"] * 5 + ["queued"]
    assert all(
        reason_codes(answer) == ["already_passed_back"]
        for answer in answers
        if answer.json()["decision"] == "not_eligible"
    )
    assert len(await jobs_of(context)) == 1


async def test_reusing_an_event_id_for_a_different_event_is_a_conflict(
    client: httpx.AsyncClient, launched: CanvasWorld
) -> None:
    await post_event(client, SUBMITTED_EVENT)
    response = await post_event(client, event(score=9))
    assert response.status_code == 409
    assert response.json()["code"] == "event_id_reused"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"unexpected": 1}, "body.unexpected"),
        ({"student.nickname": "A"}, "body.student.nickname"),
        ({"event_id": DROP}, "body.event_id"),
        ({"event_id": ""}, "body.event_id"),
        ({"event_id": "e" * 256}, "body.event_id"),
        ({"type": "finished"}, "body.type"),
        ({"attempt": "1"}, "body.attempt"),
        ({"attempt": 1.0}, "body.attempt"),
        ({"attempt": 0}, "body.attempt"),
        ({"attempt": True}, "body.attempt"),
        ({"formative.auto_passback": "true"}, "body.formative.auto_passback"),
        ({"formative.questions": [{"id": "q", "points": 1, "grading": "ai"}]}, None),
        ({"score": "7"}, "body.score"),
        ({"score": -1}, "body.score"),
        ({"max_score": True}, "body.max_score"),
        ({"score": 1e300}, "body.score"),
        ({"organization.license": ""}, "body.organization.license"),
        ({"occurred_at": "2026-11-20T14:03:11"}, "body.occurred_at"),
        ({"occurred_at": 1790000000}, "body.occurred_at"),
        ({"occurred_at": "yesterday"}, "body.occurred_at"),
        ({"response_url": "javascript:alert(1)"}, "body.response_url"),
        ({"response_url": DROP}, "body"),
        ({"submitted_at": DROP}, "body"),
        ({"type": "updated"}, "body"),
        ({"cause": "answer_edited"}, "body"),
        ({"type": "updated", "cause": "deleted"}, "body.cause"),
        ({"type": "started", "submitted_by": DROP}, "body"),
        ({"student": {"id": "s-1"}}, "body.student.class_id"),
        ({"formative.teacher_ids": "t-1"}, "body.formative.teacher_ids"),
    ],
)
async def test_an_invalid_event_is_refused_with_the_field_at_fault(
    client: httpx.AsyncClient,
    context: AppContext,
    launched: CanvasWorld,
    changes: dict[str, Any],
    field: str | None,
) -> None:
    response = await post_event(client, event(**changes))

    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["code"] == "validation_error"
    if field is not None:
        assert field in [error["field"] for error in problem["errors"]]
    assert await work_of(context) is None
    assert await jobs_of(context) == []


async def test_too_many_decimal_places_are_refused_rather_than_rounded(
    client: httpx.AsyncClient, launched: CanvasWorld
) -> None:
    raw = json.dumps(SUBMITTED_EVENT).replace('"score": 7', '"score": 7.0000000000001')
    response = await client.post(
        "/v1/submission-events", content=raw, headers={**EVENTS, "content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.score"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event_id": "e1", ',
        b"not json",
        json.dumps(SUBMITTED_EVENT).replace('"score": 7', '"score": NaN').encode(),
        json.dumps(SUBMITTED_EVENT).replace('"score": 7', '"score": Infinity').encode(),
    ],
)
async def test_a_body_that_is_not_json_is_a_bad_request(
    client: httpx.AsyncClient, raw: bytes
) -> None:
    response = await client.post(
        "/v1/submission-events", content=raw, headers={**EVENTS, "content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_json"


async def test_a_json_array_is_a_validation_problem(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/submission-events", json=[SUBMITTED_EVENT], headers=EVENTS)
    assert response.status_code == 422


async def test_an_event_that_is_not_json_by_content_type_is_unsupported(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/submission-events",
        content=json.dumps(SUBMITTED_EVENT),
        headers={**EVENTS, "content-type": "text/plain"},
    )
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


async def test_events_need_the_events_scope(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/submission-events", json=SUBMITTED_EVENT)).status_code == 401
    wrong_scope = await client.post("/v1/submission-events", json=SUBMITTED_EVENT, headers=ADMIN)
    assert wrong_scope.status_code == 403


async def test_the_event_schema_is_documented(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/v1/submission-events"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert "$ref" not in json.dumps(schema)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {"event_id", "type", "occurred_at", "score", "max_score"}
    assert schema["properties"]["score"]["type"] == "number"
    assert set(operation["responses"]) >= {"200", "202", "409", "422"}


async def test_a_newer_event_with_changed_settings_updates_the_formative(
    client: httpx.AsyncClient, context: AppContext, world: CanvasWorld
) -> None:
    await post_event(client, SUBMITTED_EVENT)
    await post_event(
        client,
        event(
            event_id="evt-later",
            student={"id": "s-2", "class_id": "c-3", "name": "Grace H."},
            occurred_at="2026-11-20T15:00:00Z",
            **{
                "formative.title": "Fractions quiz (v2)",
                "formative.auto_passback": False,
                "formative.teacher_ids": ["t-1", "t-7"],
            },
        ),
    )

    async with context.sessions() as session:
        formative = await session.get(Formative, "fm-42")
    assert formative is not None
    assert formative.title == "Fractions quiz (v2)"
    assert formative.auto_passback is False
    assert formative.teacher_ids == ["t-1", "t-7"]
    assert await work_of(context, "s-2") is not None


async def test_two_formative_students_on_one_canvas_account_get_one_automatic_passback(
    client: httpx.AsyncClient, sandbox: RunningSandbox, context: AppContext, world: CanvasWorld
) -> None:
    # Both launched as the same Canvas user into the same assignment: one (line item,
    # student) pair, so one automatic passback, whichever submits first.
    await launch_from_canvas(client, sandbox, world, student_id="s-1")
    await launch_from_canvas(client, sandbox, world, student_id="s-2")
    first = await post_event(client, SUBMITTED_EVENT)
    second = await post_event(
        client,
        event(event_id="evt-s2", student={"id": "s-2", "class_id": "c-3", "name": "Twin"}),
    )

    assert first.json()["decision"] == "queued"
    assert reason_codes(second) == ["already_passed_back"]
    assert len(await jobs_of(context)) == 1
    assert await work_of(context, "s-2") is not None


async def test_the_events_endpoint_tags_its_answers_and_allows_only_post(
    client: httpx.AsyncClient, launched: CanvasWorld
) -> None:
    answered = await client.post(
        "/v1/submission-events", json=SUBMITTED_EVENT, headers={**EVENTS, "X-Request-Id": "r-1"}
    )
    refused = await client.post("/v1/submission-events", json={}, headers=EVENTS)
    listed = await client.get("/v1/submission-events", headers=EVENTS)

    assert answered.status_code == 202 and answered.headers["x-request-id"] == "r-1"
    assert refused.status_code == 422 and len(refused.headers["x-request-id"]) == 32
    assert refused.headers["content-type"] == "application/problem+json"
    assert listed.status_code == 405
    assert listed.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("field", ["occurred_at", "submitted_at"])
@pytest.mark.parametrize("moment", POISON_TIMES)
async def test_a_time_outside_years_1_to_9999_in_utc_is_refused_at_intake(
    client: httpx.AsyncClient, context: AppContext, launched: CanvasWorld, field: str, moment: str
) -> None:
    response = await post_event(client, event(**{field: moment}))

    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert {"field": f"body.{field}", "type": "time_out_of_range"} in [
        {"field": error["field"], "type": error["type"]} for error in problem["errors"]
    ]
    assert await work_of(context) is None
    assert await jobs_of(context) == []


async def test_times_at_the_edges_of_years_1_to_9999_are_stored_and_read_back(
    client: httpx.AsyncClient, launched: CanvasWorld
) -> None:
    body = event(occurred_at="9999-12-31T23:59:59.999Z", submitted_at="0001-01-01T00:00:00Z")
    response = await post_event(client, body)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    job = await client.get(f"/v1/passback/jobs/{job_id}", headers=ADMIN)
    assert job.status_code == 200, job.text
    assert job.json()["score_timestamp"].startswith("9999-12-31T23:59:59.999")
    assert job.json()["submitted_at"].startswith("0001-01-01T00:00:00")
    assert (await post_event(client, body)).json() == response.json()


async def test_an_offset_past_postgresqls_text_input_is_stored_as_the_same_instant(
    client: httpx.AsyncClient, launched: CanvasWorld
) -> None:
    body = event(occurred_at="2026-11-20T14:03:11.250-23:59", submitted_at="2026-11-20T23:00Z")
    response = await post_event(client, body)
    assert response.status_code == 202, response.text

    job = await client.get(f"/v1/passback/jobs/{response.json()['job_id']}", headers=ADMIN)
    assert job.json()["score_timestamp"].startswith("2026-11-21T14:02:11.250")
