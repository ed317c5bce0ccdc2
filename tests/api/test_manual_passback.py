"""Manual passback over the API against the sandbox Canvas, on both databases.

A teacher previews, sends and follows; the sandbox gradebook is what Canvas would show.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.context import AppContext
from tests.support.auth import ADMIN_KEY, PASSBACK_KEY, bearer, teacher_headers
from tests.support.classroom import Classroom, deliver_all, make_classroom
from tests.support.sandbox import RunningSandbox, sandbox_fixture, sandbox_server_fixture  # noqa: F401

TEACHER = teacher_headers("t-1")


@pytest.fixture
async def classroom(
    client: httpx.AsyncClient,
    sandbox: RunningSandbox,
    context: AppContext,
) -> Classroom:
    return await make_classroom(client, sandbox, context.keyring, points=20)


async def preview(
    classroom: Classroom, mode: str = "grades", headers: dict[str, str] = TEACHER
) -> dict[str, Any]:
    response = await classroom.api.get(
        f"/v1/formatives/{classroom.formative_id}/passback/preview",
        params={"mode": mode},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def rows_of(previewed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["student_id"]: row for group in previewed["classes"] for row in group["rows"]}


async def send(
    classroom: Classroom,
    body: dict[str, Any],
    *,
    headers: dict[str, str] = TEACHER,
    status: int = 202,
) -> dict[str, Any]:
    response = await classroom.api.post(
        f"/v1/formatives/{classroom.formative_id}/passback", json=body, headers=headers
    )
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def batch(classroom: Classroom, batch_id: str) -> dict[str, Any]:
    response = await classroom.api.get(f"/v1/passback/batches/{batch_id}", headers=TEACHER)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def whole_class(classroom: Classroom, **extra: Any) -> dict[str, Any]:
    return {"select": {"class_ids": [classroom.class_id]}, **extra}


async def everyone_launched_and_submitted(classroom: Classroom, *scores: str) -> None:
    for student, score in zip(classroom.students, scores, strict=True):
        await classroom.launch(student.student_id)
        await classroom.work(student.student_id, score)


def as_decimal(value: Any) -> Decimal:
    return Decimal(str(value))


async def test_preview_numbers_equal_the_canvas_gradebook_after_sending(
    classroom: Classroom, context: AppContext
) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    await classroom.sandbox.admin.clear_requests()

    before = rows_of(await preview(classroom))
    assert [as_decimal(before[s]["percent"]) for s in ("s-1", "s-2", "s-3")] == [70, 85, 100]
    assert {as_decimal(row["canvas_points"]) for row in before.values()} == {20}
    assert [as_decimal(before[s]["canvas_score"]) for s in ("s-1", "s-2", "s-3")] == [14, 17, 20]
    assert all(row["sendable"] and row["last_passback"] is None for row in before.values())
    reads = await classroom.sandbox.admin.requests(path_contains="/line_items/", method="GET")
    paths = sorted(read["path"].rsplit("/", 1)[-1] for read in reads)
    assert paths == [classroom.world["line_item_id"], "results"], (
        "one read of the line item and one of its results, not one per student"
    )

    answer = await send(classroom, whole_class(classroom))
    assert sorted(job["student_id"] for job in answer["jobs"]) == ["s-1", "s-2", "s-3"]
    assert answer["skipped"] == []
    await deliver_all(context)

    after = rows_of(await preview(classroom))
    for student_id, row in after.items():
        in_canvas = await classroom.gradebook_score(student_id)
        assert in_canvas == as_decimal(row["canvas_score"])
        assert row["last_passback"]["status"] == "delivered"
        assert as_decimal(row["last_passback"]["score_given"]) == in_canvas
    followed = await batch(classroom, answer["batch_id"])
    assert followed["done"] is True
    assert followed["counts"]["delivered"] == 3
    assert followed["sent_by_teacher_id"] == "t-1"
    assert followed["sent_via"] == "teacher:t-1"


async def test_overrides_change_only_what_canvas_receives(
    classroom: Classroom, context: AppContext
) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    overrides = {"s-1": {"percent": "110"}, "s-2": {"points": "5.25"}}
    await send(classroom, whole_class(classroom, overrides=overrides))
    await deliver_all(context)

    assert await classroom.gradebook_score("s-1") == Decimal("22")  # 110% of 20 points
    assert await classroom.gradebook_score("s-2") == Decimal("5.25")
    assert await classroom.gradebook_score("s-3") == Decimal("20")
    rows = rows_of(await preview(classroom))
    assert as_decimal(rows["s-1"]["score"]) == 7, "Formative's score is untouched"
    assert as_decimal(rows["s-1"]["percent"]) == 70
    assert as_decimal(rows["s-2"]["percent"]) == 85


async def test_overrides_are_refused_when_negative_or_not_for_this_mode(
    classroom: Classroom,
) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    negative = await send(
        classroom, whole_class(classroom, overrides={"s-1": {"percent": "-5"}}), status=422
    )
    assert negative["code"] == "validation_error"
    flip_in_grades = await send(
        classroom, whole_class(classroom, overrides={"s-1": {"complete": False}}), status=422
    )
    assert flip_in_grades["code"] == "validation_error"
    two_at_once = await send(
        classroom,
        whole_class(classroom, overrides={"s-1": {"percent": "50", "points": "3"}}),
        status=422,
    )
    assert two_at_once["code"] == "validation_error"
    nothing = await send(classroom, {"select": {}}, status=422)
    assert nothing["code"] == "validation_error"


async def test_complete_incomplete_sends_full_or_no_credit_with_the_teachers_flips(
    classroom: Classroom, context: AppContext
) -> None:
    for student in classroom.students:
        await classroom.launch(student.student_id)
    await classroom.work("s-1", "3")
    await classroom.work("s-2", "4", event_type="started")
    await classroom.work("s-3", "9")

    rows = rows_of(await preview(classroom, mode="complete_incomplete"))
    assert [rows[s]["complete"] for s in ("s-1", "s-2", "s-3")] == [True, False, True]
    assert [as_decimal(rows[s]["canvas_score"]) for s in ("s-1", "s-2", "s-3")] == [20, 0, 20]

    flips = {"s-2": {"complete": True}, "s-3": {"complete": False}}
    await send(classroom, whole_class(classroom, mode="complete_incomplete", overrides=flips))
    await deliver_all(context)

    assert await classroom.gradebook_score("s-1") == Decimal("20")
    assert await classroom.gradebook_score("s-2") == Decimal("20")
    assert await classroom.gradebook_score("s-3") == Decimal("0")


async def test_zero_point_assignment_gets_zero_and_the_preview_warns(
    client: httpx.AsyncClient,
    sandbox: RunningSandbox,
    context: AppContext,
) -> None:
    classroom = await make_classroom(client, sandbox, context.keyring, points=0)
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")

    previewed = await preview(classroom)
    assert [warning["code"] for warning in previewed["warnings"]] == ["canvas_points_zero"]
    assert sorted(previewed["warnings"][0]["student_ids"]) == ["s-1", "s-2", "s-3"]
    rows = rows_of(previewed)
    assert all(row["sendable"] and as_decimal(row["canvas_score"]) == 0 for row in rows.values())

    await send(classroom, whole_class(classroom))
    await deliver_all(context)
    for student in classroom.students:
        assert await classroom.gradebook_score(student.student_id) == Decimal("0")


async def test_deleted_canvas_assignment_shows_assignment_not_linked(
    classroom: Classroom, context: AppContext
) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    await classroom.sandbox.admin.delete_assignment(classroom.assignment_id)

    previewed = await preview(classroom)
    assert [warning["code"] for warning in previewed["warnings"]] == ["assignment_not_linked"]
    rows = rows_of(previewed)
    assert {row["reason"] for row in rows.values()} == {"assignment_not_linked"}
    assert not any(row["sendable"] for row in rows.values())
    assert "no longer" in rows["s-1"]["reason_text"]

    # Sent anyway through the API: the job fails with the same explanation.
    answer = await send(classroom, {"select": {"student_ids": ["s-1"]}})
    await deliver_all(context)
    followed = await batch(classroom, answer["batch_id"])
    (outcome,) = followed["students"]
    assert outcome["status"] == "failed"
    assert outcome["reason"] == "assignment_not_linked"
    assert "no longer" in outcome["message"]


async def test_students_who_cannot_be_sent_are_shown_with_the_reason_and_skipped(
    classroom: Classroom, context: AppContext
) -> None:
    await classroom.launch("s-1")
    await classroom.work("s-1", "7")
    await classroom.work("s-2", "8")  # worked on Formative's website, never launched from Canvas
    await classroom.launch("s-3", from_assignment=False)  # from the course menu, not graded
    await classroom.work("s-3", "9")

    rows = rows_of(await preview(classroom))
    assert rows["s-1"]["sendable"] is True
    assert (rows["s-2"]["sendable"], rows["s-2"]["reason"]) == (False, "not_launched_from_lms")
    assert (rows["s-3"]["sendable"], rows["s-3"]["reason"]) == (False, "not_a_canvas_assignment")
    assert rows["s-2"]["reason_text"]

    answer = await send(classroom, whole_class(classroom))
    assert [job["student_id"] for job in answer["jobs"]] == ["s-1"]
    skipped = {item["student_id"]: item["reason"] for item in answer["skipped"]}
    assert skipped == {"s-2": "not_launched_from_lms", "s-3": "not_a_canvas_assignment"}
    await deliver_all(context)
    assert await classroom.gradebook_score("s-2") is None
    followed = await batch(classroom, answer["batch_id"])
    assert followed["counts"]["skipped"] == 2
    assert followed["counts"]["delivered"] == 1


async def test_a_launched_student_who_has_not_started_is_not_sendable(
    classroom: Classroom,
) -> None:
    await classroom.launch("s-1")
    await classroom.work("s-1", "7")
    await classroom.launch("s-2")

    rows = rows_of(await preview(classroom))
    assert (rows["s-2"]["sendable"], rows["s-2"]["reason"]) == (False, "not_started")
    answer = await send(classroom, {"select": {"student_ids": ["s-2", "s-9"]}})
    assert answer["jobs"] == []
    skipped = {item["student_id"]: item["reason"] for item in answer["skipped"]}
    assert skipped == {"s-2": "not_started", "s-9": "not_launched_from_lms"}


async def test_a_teacher_of_another_formative_gets_403_and_learns_nothing(
    classroom: Classroom,
) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    answer = await send(classroom, whole_class(classroom))
    stranger = teacher_headers("t-9")
    api = classroom.api

    existing = await api.get(
        f"/v1/formatives/{classroom.formative_id}/passback/preview", headers=stranger
    )
    missing = await api.get("/v1/formatives/no-such-formative/passback/preview", headers=stranger)
    assert existing.status_code == missing.status_code == 403
    assert existing.json()["code"] == missing.json()["code"] == "not_a_teacher_of_formative"
    sent = await api.post(
        f"/v1/formatives/{classroom.formative_id}/passback",
        json=whole_class(classroom),
        headers=stranger,
    )
    assert sent.status_code == 403
    their_batch = await api.get(f"/v1/passback/batches/{answer['batch_id']}", headers=stranger)
    no_batch = await api.get("/v1/passback/batches/no-such-batch", headers=stranger)
    assert their_batch.status_code == no_batch.status_code == 403
    assert their_batch.json()["detail"] == no_batch.json()["detail"]
    acting_for_stranger = {**bearer(PASSBACK_KEY), "X-Acting-Teacher-Id": "t-9"}
    assert (
        await api.get(
            f"/v1/formatives/{classroom.formative_id}/passback/preview",
            headers=acting_for_stranger,
        )
    ).status_code == 403
    admin_reads = await api.get(
        f"/v1/passback/batches/{answer['batch_id']}", headers=bearer(ADMIN_KEY)
    )
    assert admin_reads.status_code == 200


async def test_a_passback_key_acts_for_the_named_teacher_and_the_batch_records_it(
    classroom: Classroom,
) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    co_teacher = {**bearer(PASSBACK_KEY), "X-Acting-Teacher-Id": "t-2"}
    answer = await send(classroom, whole_class(classroom), headers=co_teacher)
    followed = await batch(classroom, answer["batch_id"])
    assert followed["sent_by_teacher_id"] == "t-2"
    assert followed["sent_via"] == "key:formative-ui"


async def test_resending_after_a_grade_change_updates_canvas_without_a_new_attempt(
    classroom: Classroom, context: AppContext
) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    await send(classroom, {"select": {"student_ids": ["s-1"]}})
    await deliver_all(context)
    first = await classroom.submission("s-1")
    assert Decimal(first["score"]) == 14
    assert first["attempt"] == 1

    await classroom.work("s-1", "9", event_type="updated", cause="teacher_adjusted")
    rows = rows_of(await preview(classroom))
    assert as_decimal(rows["s-1"]["canvas_score"]) == 18
    await send(classroom, {"select": {"student_ids": ["s-1"]}})
    await deliver_all(context)

    second = await classroom.submission("s-1")
    assert Decimal(second["score"]) == 18
    assert second["attempt"] == 1, "an update is not a new submission attempt"


async def test_the_same_idempotency_key_answers_the_same_batch(classroom: Classroom) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    keyed = {**TEACHER, "Idempotency-Key": "send-1"}
    first = await send(classroom, whole_class(classroom), headers=keyed)
    again = await classroom.api.post(
        f"/v1/formatives/{classroom.formative_id}/passback",
        json=whole_class(classroom),
        headers=keyed,
    )
    assert again.status_code == 202
    assert again.json() == first
    assert again.headers["Idempotent-Replayed"] == "true"
    jobs = await classroom.api.get(
        "/v1/passback/jobs",
        params={"formative_id": classroom.formative_id},
        headers=bearer(ADMIN_KEY),
    )
    assert len(jobs.json()["items"]) == 3, "the repeat queued nothing"

    different = await send(
        classroom, whole_class(classroom, comment="Well done"), headers=keyed, status=422
    )
    assert different["code"] == "idempotency_key_reused"


async def test_a_newer_send_supersedes_the_older_pending_one(
    classroom: Classroom, context: AppContext
) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    older = await send(classroom, whole_class(classroom))
    newer = await send(classroom, whole_class(classroom, overrides={"s-1": {"percent": "50"}}))
    await deliver_all(context)

    followed_older = await batch(classroom, older["batch_id"])
    assert followed_older["counts"]["superseded"] == 3
    assert all(s["message"] for s in followed_older["students"])
    followed_newer = await batch(classroom, newer["batch_id"])
    assert followed_newer["counts"]["delivered"] == 3
    assert await classroom.gradebook_score("s-1") == Decimal("10")


async def test_when_canvas_cannot_be_asked_the_preview_warns_and_rows_stay_sendable(
    classroom: Classroom,
) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    await classroom.sandbox.admin.add_fault("error", path="/line_items/", method="GET", status=503)

    previewed = await preview(classroom)
    assert [warning["code"] for warning in previewed["warnings"]] == ["canvas_points_unavailable"]
    rows = rows_of(previewed)
    assert all(row["sendable"] for row in rows.values())
    assert all(
        row["canvas_points"] is None and row["canvas_score"] is None for row in rows.values()
    )


async def test_the_teacher_page_is_a_shell_outside_the_api_schema(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/teach/formatives/fm-<42>/passback")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert 'data-formative-id="fm-&lt;42&gt;"' in page.text
    script = await client.get("/teach/static/passback.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert (await client.get("/teach/static/secrets.env")).status_code == 404
    schema = (await client.get("/openapi.json")).json()
    assert not any(path.startswith("/teach") for path in schema["paths"])
    assert "/v1/formatives/{formative_id}/passback/preview" in schema["paths"]


async def test_two_sends_racing_with_one_idempotency_key_make_one_batch(
    classroom: Classroom,
) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    keyed = {**TEACHER, "Idempotency-Key": "double-click"}
    url = f"/v1/formatives/{classroom.formative_id}/passback"
    first, second = await asyncio.gather(
        classroom.api.post(url, json=whole_class(classroom), headers=keyed),
        classroom.api.post(url, json=whole_class(classroom), headers=keyed),
    )
    assert first.status_code == second.status_code == 202, (first.text, second.text)
    assert first.json() == second.json()
    jobs = await classroom.api.get(
        "/v1/passback/jobs",
        params={"formative_id": classroom.formative_id},
        headers=bearer(ADMIN_KEY),
    )
    assert len(jobs.json()["items"]) == 3


async def test_a_selection_is_whole_classes_minus_exclusions(classroom: Classroom) -> None:
    await everyone_launched_and_submitted(classroom, "7", "8.5", "10")
    answer = await send(
        classroom,
        {"select": {"class_ids": [classroom.class_id], "exclude_student_ids": ["s-2"]}},
    )
    assert sorted(job["student_id"] for job in answer["jobs"]) == ["s-1", "s-3"]
    named = await send(
        classroom, {"select": {"student_ids": ["s-2"], "exclude_student_ids": ["s-1"]}}
    )
    assert [job["student_id"] for job in named["jobs"]] == ["s-2"]
    nobody = await send(classroom, {"select": {"class_ids": ["another-class"]}})
    assert nobody["jobs"] == nobody["skipped"] == []
