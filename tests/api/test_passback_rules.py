"""The rules behind manual passback (issue #13, items 8–12), over the API against the
sandbox Canvas on both databases."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select

from app.context import AppContext
from app.store.models import PassbackJob
from tests.api.test_manual_passback import (
    as_decimal,
    batch,
    preview,
    rows_of,
    send,
    whole_class,
)
from tests.support.classroom import Classroom, deliver_all, make_classroom
from tests.support.sandbox import RunningSandbox, sandbox_fixture, sandbox_server_fixture  # noqa: F401


@pytest.fixture
async def classroom(
    client: httpx.AsyncClient, sandbox: RunningSandbox, context: AppContext
) -> Classroom:
    return await make_classroom(client, sandbox, context.keyring, points=20)


async def jobs_of(context: AppContext, student_id: str) -> list[PassbackJob]:
    async with context.sessions() as session:
        found = await session.scalars(
            select(PassbackJob).where(PassbackJob.student_id == student_id).order_by(PassbackJob.id)
        )
        return list(found)


# --- 8. License ------------------------------------------------------------------------------


async def test_without_a_school_district_license_rows_are_unsendable_and_a_send_skips_them(
    classroom: Classroom, context: AppContext
) -> None:
    for student_id in ("s-1", "s-2"):
        await classroom.launch(student_id)
        await classroom.work(student_id, "7", license="individual")

    body = await preview(classroom)
    answer = await send(classroom, whole_class(classroom))
    await deliver_all(context)

    assert body["license_ok"] is False
    for row in rows_of(body).values():
        assert (row["sendable"], row["reason"]) == (False, "license_required")
        assert "School & District" in row["reason_text"]
        assert row["default_selected"] is False
    assert answer["jobs"] == []
    assert {(item["student_id"], item["reason"]) for item in answer["skipped"]} == {
        ("s-1", "license_required"),
        ("s-2", "license_required"),
    }
    assert await classroom.gradebook_score("s-1") is None


# --- 9. Forward-only submissions ------------------------------------------------------------


async def test_an_update_without_the_submission_keeps_it_and_a_manual_send_is_no_new_attempt(
    classroom: Classroom, context: AppContext
) -> None:
    await classroom.launch("s-1")
    first = await classroom.work("s-1", "7", automatic=True)
    assert first["decision"] == "queued"
    await deliver_all(context)
    assert (await classroom.submission("s-1"))["attempt"] == 1
    submitted_at = classroom.submitted_at["s-1"]

    updated = await classroom.work(
        "s-1", "9", event_type="updated", cause="teacher_adjusted", with_submission=False
    )
    assert updated["decision"] == "not_eligible"
    grades = rows_of(await preview(classroom))["s-1"]
    complete = rows_of(await preview(classroom, "complete_incomplete"))["s-1"]
    await send(classroom, {"select": {"student_ids": ["s-1"]}})
    await deliver_all(context)

    assert grades["submitted"] is True, "a submitted student stays submitted"
    assert complete["complete"] is True
    assert as_decimal(complete["canvas_score"]) == 20
    cell = await classroom.submission("s-1")
    assert cell["attempt"] == 1, "an update in Canvas, never a second attempt"
    assert as_decimal(cell["score"]) == 18
    automatic, manual = await jobs_of(context, "s-1")
    assert manual.new_submission is False
    assert manual.submitted_at == automatic.submitted_at
    assert manual.submitted_at is not None
    assert manual.submitted_at.isoformat(timespec="milliseconds").startswith(submitted_at[:23])


async def test_a_new_attempt_starts_over_without_the_earlier_submission(
    classroom: Classroom,
) -> None:
    await classroom.launch("s-1")
    await classroom.work("s-1", "7")
    classroom.submitted_at.pop("s-1")

    await classroom.work("s-1", "2", event_type="started", attempt=2)

    row = rows_of(await preview(classroom))["s-1"]
    assert row["submitted"] is False


# --- 12. Points override on a 0-point assignment ----------------------------------------------


@pytest.mark.parametrize("points", ["0"])
async def test_a_points_override_on_a_zero_point_assignment_sends_zero(
    client: httpx.AsyncClient, sandbox: RunningSandbox, context: AppContext, points: str
) -> None:
    room = await make_classroom(client, sandbox, context.keyring, points=points)
    await room.launch("s-1")
    await room.work("s-1", "7")

    body = await preview(room)
    answer = await send(room, whole_class(room, overrides={"s-1": {"points": "15"}}))
    await deliver_all(context)

    assert [warning["code"] for warning in body["warnings"]] == ["canvas_points_zero"]
    assert "points overrides too" in body["warnings"][0]["message"]
    row = rows_of(body)["s-1"]
    assert as_decimal(row["canvas_points"]) == 0
    assert as_decimal(row["canvas_score"]) == 0
    assert await room.gradebook_score("s-1") == Decimal(0)
    (student,) = (await batch(room, answer["batch_id"]))["students"]
    assert student["status"] == "delivered"
    assert (as_decimal(student["score_given"]), as_decimal(student["canvas_points"])) == (0, 0)


async def test_a_points_override_above_the_canvas_points_stays_extra_credit(
    classroom: Classroom, context: AppContext
) -> None:
    await classroom.launch("s-1")
    await classroom.work("s-1", "7")

    answer = await send(classroom, whole_class(classroom, overrides={"s-1": {"points": "25"}}))
    await deliver_all(context)

    assert await classroom.gradebook_score("s-1") == Decimal(25)
    (student,) = (await batch(classroom, answer["batch_id"]))["students"]
    assert (as_decimal(student["score_given"]), as_decimal(student["canvas_points"])) == (25, 20)
