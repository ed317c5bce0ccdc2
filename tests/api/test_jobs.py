"""Operators' job endpoints: list with filters and cursor paging, read with attempts, retry."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.context import AppContext
from tests.support.auth import ADMIN_KEY, bearer, teacher_headers
from tests.support.classroom import Classroom, deliver_all, make_classroom
from tests.support.poison import write_unreadable_time
from tests.support.sandbox import RunningSandbox, sandbox_fixture, sandbox_server_fixture  # noqa: F401

ADMIN = bearer(ADMIN_KEY)
TEACHER = teacher_headers("t-1")


@pytest.fixture
async def classroom(
    client: httpx.AsyncClient,
    sandbox: RunningSandbox,
    context: AppContext,
) -> Classroom:
    classroom = await make_classroom(client, sandbox, context.keyring, points=10)
    for student in classroom.students:
        await classroom.launch(student.student_id)
        await classroom.work(student.student_id, "8")
    return classroom


async def send(classroom: Classroom, *student_ids: str, **extra: Any) -> dict[str, Any]:
    response = await classroom.api.post(
        f"/v1/formatives/{classroom.formative_id}/passback",
        json={"select": {"student_ids": list(student_ids)}, **extra},
        headers=TEACHER,
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def jobs(api: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await api.get("/v1/passback/jobs", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def job(api: httpx.AsyncClient, job_id: int) -> dict[str, Any]:
    response = await api.get(f"/v1/passback/jobs/{job_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_jobs_are_listed_newest_first_in_pages(classroom: Classroom) -> None:
    queued = (await send(classroom, "s-1", "s-2", "s-3"))["jobs"]
    ids = sorted((item["job_id"] for item in queued), reverse=True)

    first = await jobs(classroom.api, limit=2)
    assert [item["id"] for item in first["items"]] == ids[:2]
    assert first["next_cursor"]
    second = await jobs(classroom.api, limit=2, cursor=first["next_cursor"])
    assert [item["id"] for item in second["items"]] == ids[2:]
    assert second["next_cursor"] is None

    only_s2 = await jobs(classroom.api, student_id="s-2")
    assert [item["student_id"] for item in only_s2["items"]] == ["s-2"]
    assert (await jobs(classroom.api, status="delivered"))["items"] == []
    assert len((await jobs(classroom.api, formative_id=classroom.formative_id))["items"]) == 3
    assert (await jobs(classroom.api, formative_id="another"))["items"] == []


async def test_a_bad_cursor_or_filter_is_a_422_and_teachers_cannot_list_jobs(
    classroom: Classroom,
) -> None:
    api = classroom.api
    bad_cursor = await api.get("/v1/passback/jobs", params={"cursor": "nonsense"}, headers=ADMIN)
    assert bad_cursor.status_code == 422
    assert bad_cursor.json()["code"] == "invalid_cursor"
    bad_status = await api.get("/v1/passback/jobs", params={"status": "lost"}, headers=ADMIN)
    assert bad_status.status_code == 422
    assert (await api.get("/v1/passback/jobs", headers=TEACHER)).status_code == 403
    assert (await api.get("/v1/passback/jobs/1", headers=TEACHER)).status_code == 403
    assert (await api.post("/v1/passback/jobs/1/retry", headers=TEACHER)).status_code == 403
    missing = await api.get("/v1/passback/jobs/999999", headers=ADMIN)
    assert missing.status_code == 404
    assert missing.json()["code"] == "job_not_found"


async def test_a_job_shows_its_attempts(classroom: Classroom, context: AppContext) -> None:
    (queued,) = (await send(classroom, "s-1", comment="Nice work"))["jobs"]
    await deliver_all(context)

    read = await job(classroom.api, queued["job_id"])
    assert read["status"] == "delivered"
    assert read["kind"] == "manual"
    assert read["acting_teacher_id"] == "t-1"
    assert read["has_comment"] is True
    assert Decimal(str(read["score_given"])) == 8
    assert len(read["attempts"]) >= 1
    assert read["attempts"][-1]["http_status"] == 200


async def test_a_failed_job_is_retried_with_its_original_timestamp_and_a_fresh_deadline(
    classroom: Classroom, context: AppContext
) -> None:
    await classroom.sandbox.admin.set_course_state(classroom.course_id, "concluded")
    (queued,) = (await send(classroom, "s-1"))["jobs"]
    await deliver_all(context)
    failed = await job(classroom.api, queued["job_id"])
    assert failed["status"] == "failed"
    assert failed["outcome_code"] == "course_concluded"
    assert failed["outcome_text"]
    assert failed["platform_message"]

    await classroom.sandbox.admin.set_course_state(classroom.course_id, "available")
    retried = await classroom.api.post(f"/v1/passback/jobs/{queued['job_id']}/retry", headers=ADMIN)
    assert retried.status_code == 202, retried.text
    again = retried.json()
    assert again["status"] == "pending"
    assert again["score_timestamp"] == failed["score_timestamp"]
    assert again["deadline_at"] > failed["deadline_at"]
    assert again["outcome_code"] is None
    await deliver_all(context)

    delivered = await job(classroom.api, queued["job_id"])
    assert delivered["status"] == "delivered"
    assert len(delivered["attempts"]) > len(failed["attempts"])
    assert await classroom.gradebook_score("s-1") == Decimal("8")


async def test_only_the_newest_failed_job_of_a_student_can_be_retried(
    classroom: Classroom, context: AppContext
) -> None:
    await classroom.sandbox.admin.set_course_state(classroom.course_id, "concluded")
    (older,) = (await send(classroom, "s-1"))["jobs"]
    await deliver_all(context)
    (newer,) = (await send(classroom, "s-1", overrides={"s-1": {"percent": "90"}}))["jobs"]
    await deliver_all(context)

    refused = await classroom.api.post(f"/v1/passback/jobs/{older['job_id']}/retry", headers=ADMIN)
    assert refused.status_code == 409
    assert refused.json()["code"] == "newer_job_exists"
    accepted = await classroom.api.post(f"/v1/passback/jobs/{newer['job_id']}/retry", headers=ADMIN)
    assert accepted.status_code == 202


async def test_delivered_pending_and_superseded_jobs_are_not_retried(
    classroom: Classroom, context: AppContext
) -> None:
    (delivered,) = (await send(classroom, "s-1"))["jobs"]
    await deliver_all(context)
    (superseded,) = (await send(classroom, "s-2"))["jobs"]
    (pending,) = (await send(classroom, "s-2"))["jobs"]
    for job_id in (delivered["job_id"], superseded["job_id"], pending["job_id"]):
        refused = await classroom.api.post(f"/v1/passback/jobs/{job_id}/retry", headers=ADMIN)
        assert refused.status_code == 409
        assert refused.json()["code"] == "job_not_retryable"


async def test_an_unreadable_job_row_never_makes_the_job_list_preview_or_send_answer_500(
    classroom: Classroom, context: AppContext
) -> None:
    [queued, *_] = (await send(classroom, "s-1", "s-2"))["jobs"]
    await write_unreadable_time(context.engine, queued["job_id"], "submitted_at")

    listed = await jobs(classroom.api)
    assert queued["job_id"] not in [item["id"] for item in listed["items"]]
    assert listed["unreadable_job_ids"] == [queued["job_id"]]
    one = await classroom.api.get(f"/v1/passback/jobs/{queued['job_id']}", headers=ADMIN)
    assert (one.status_code, one.json()["code"]) == (409, "job_unreadable")
    path = f"/v1/formatives/{classroom.formative_id}/passback"
    assert (await classroom.api.get(f"{path}/preview", headers=TEACHER)).status_code == 200
    await send(classroom, "s-1")


async def test_a_quarantined_job_whose_row_is_fixed_can_be_retried(
    classroom: Classroom, context: AppContext
) -> None:
    [queued] = (await send(classroom, "s-1"))["jobs"]
    await write_unreadable_time(context.engine, queued["job_id"], "submitted_at")
    await deliver_all(context)
    assert (await jobs(classroom.api, status="quarantined"))["unreadable_job_ids"] == [
        queued["job_id"]
    ]

    async with context.engine.begin() as connection:  # the runbook's fix
        await connection.execute(
            text("UPDATE passback_jobs SET submitted_at = NULL WHERE id = :id"),
            {"id": queued["job_id"]},
        )
    quarantined = await job(classroom.api, queued["job_id"])
    assert (quarantined["status"], quarantined["outcome_code"]) == ("quarantined", "unreadable_row")
    retried = await classroom.api.post(f"/v1/passback/jobs/{queued['job_id']}/retry", headers=ADMIN)
    assert retried.status_code == 202, retried.text
    await deliver_all(context)
    assert (await job(classroom.api, queued["job_id"]))["status"] == "delivered"
