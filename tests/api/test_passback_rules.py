"""The rules behind manual passback (issue #13, items 8–12), over the API against the
sandbox Canvas on both databases."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import Settings
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
from tests.support import databases
from tests.support.classroom import (
    Classroom,
    deliver_all,
    make_classroom,
    twenty_point_classroom_fixture,  # noqa: F401
)
from tests.support.sandbox import RunningSandbox, TestClock, sandbox_fixture, sandbox_server_fixture  # noqa: F401


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

    assert [(w["code"], w["student_ids"]) for w in answer["warnings"]] == [
        ("points_override", ["s-1"])
    ]
    assert "become 0" in answer["warnings"][0]["message"]
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

    await classroom.launch("s-2")
    await classroom.work("s-2", "4", event_type="started")
    overrides = {"s-1": {"points": "25"}, "s-2": {"percent": "110"}}
    answer = await send(classroom, whole_class(classroom, overrides=overrides))
    await deliver_all(context)

    assert {(w["code"], tuple(w["student_ids"])) for w in answer["warnings"]} == {
        ("points_override", ("s-1",)),
        ("above_100_percent", ("s-2",)),
        ("not_submitted", ("s-2",)),
    }
    assert await classroom.gradebook_score("s-2") == Decimal(22)

    assert await classroom.gradebook_score("s-1") == Decimal(25)
    students = (await batch(classroom, answer["batch_id"]))["students"]
    student = next(row for row in students if row["student_id"] == "s-1")
    assert (as_decimal(student["score_given"]), as_decimal(student["canvas_points"])) == (25, 20)


# --- 10. Strictly increasing timestamps ------------------------------------------------------


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture
async def context(settings: Settings, clock: TestClock) -> AsyncIterator[AppContext]:
    """The instance on an emptied database, its clock under the test's control."""
    built = AppContext.build(settings, clock=clock)
    await databases.empty_all_tables(built.engine)
    await built.load_tool_keys()
    try:
        yield built
    finally:
        await built.close()


def start_of_a_second(clock: TestClock) -> datetime:
    """Freeze the service's clock 0.3 s into the current second; returns that second."""
    now = clock.freeze()
    clock.advance(0.3 - now.microsecond / 1_000_000)
    return now.replace(microsecond=0)


async def test_a_manual_send_in_the_second_of_the_automatic_grade_lands_on_a_moodle_like_platform(
    classroom: Classroom, context: AppContext, clock: TestClock
) -> None:
    await classroom.sandbox.admin.set_flags(whole_second_timestamps=True)
    second = start_of_a_second(clock)
    await classroom.launch("s-1")
    automatic = await classroom.work(
        "s-1", "7", automatic=True, at=second + timedelta(milliseconds=200)
    )
    assert automatic["decision"] == "queued"
    await deliver_all(context)
    assert await classroom.gradebook_score("s-1") == Decimal(14)
    await classroom.work(
        "s-1",
        "10",
        event_type="updated",
        cause="teacher_adjusted",
        at=second + timedelta(milliseconds=250),
    )

    answer = await send(classroom, {"select": {"student_ids": ["s-1"]}})
    await deliver_all(context)

    (student,) = (await batch(classroom, answer["batch_id"]))["students"]
    assert student["status"] == "delivered", student
    assert await classroom.gradebook_score("s-1") == Decimal(20), "the teacher's 10 counts"
    first, manual = await jobs_of(context, "s-1")
    assert first.score_timestamp == second + timedelta(milliseconds=200)
    assert manual.score_timestamp == second + timedelta(seconds=1), "the next whole second"
    assert manual.new_submission is False


@pytest.mark.parametrize(("after_ms", "expected_ms"), [(500, 1000), (100, 100)])
async def test_an_automatic_grade_after_a_manual_one_in_the_same_second_takes_the_next_second(
    classroom: Classroom, context: AppContext, clock: TestClock, after_ms: int, expected_ms: int
) -> None:
    """(An automatic grade produced before the manual one keeps its time: it is older.)"""
    second = start_of_a_second(clock)
    await classroom.launch("s-1")
    await classroom.work("s-1", "3", event_type="started", at=second)
    await send(classroom, {"select": {"student_ids": ["s-1"]}})

    automatic = await classroom.work(
        "s-1", "7", automatic=True, at=second + timedelta(milliseconds=after_ms)
    )

    assert automatic["decision"] == "queued"
    manual, queued = await jobs_of(context, "s-1")
    assert manual.score_timestamp == second + timedelta(milliseconds=300)
    assert queued.score_timestamp == second + timedelta(milliseconds=expected_ms)


async def test_the_timestamp_is_decided_when_queued_and_stays_on_every_retry(
    classroom: Classroom, context: AppContext, clock: TestClock
) -> None:
    second = start_of_a_second(clock)
    await classroom.launch("s-1")
    await classroom.work("s-1", "7")
    await send(classroom, {"select": {"student_ids": ["s-1"]}})
    await classroom.sandbox.admin.add_fault(
        "error", path="/scores", method="POST", status=500, remaining=2
    )
    await send(classroom, {"select": {"student_ids": ["s-1"]}})
    for _ in range(4):
        await deliver_all(context)
        clock.advance(120)

    first, second_send = await jobs_of(context, "s-1")
    assert first.score_timestamp == second + timedelta(milliseconds=300)
    assert first.status == "superseded"
    assert second_send.score_timestamp == second + timedelta(seconds=1)
    assert second_send.status == "delivered"
    posts = await classroom.sandbox.admin.requests(path_contains="/scores", method="POST")
    assert [post["status"] for post in posts] == [500, 500, 200]
    stamps = {json.loads(post["request_body"])["timestamp"] for post in posts[-1:]}
    assert stamps == {(second + timedelta(seconds=1)).isoformat(timespec="milliseconds")}


async def test_a_refusal_as_stale_is_superseded_only_when_a_newer_grade_of_ours_landed(
    classroom: Classroom, context: AppContext
) -> None:
    await classroom.launch("s-1")
    await classroom.work("s-1", "7")
    await send(classroom, {"select": {"student_ids": ["s-1"]}})
    await deliver_all(context)
    student = classroom.student("s-1")
    with classroom.sandbox.state.lock:
        line_item_id = str(classroom.world["line_item_id"])
        result = classroom.sandbox.state.result_of(line_item_id, student.user_id)
        assert result is not None
        result.updated_at = datetime(2099, 1, 1, tzinfo=UTC)  # another tool's later grade

    answer = await send(classroom, {"select": {"student_ids": ["s-1"]}})
    await deliver_all(context)

    (row,) = (await batch(classroom, answer["batch_id"]))["students"]
    assert row["status"] == "failed", "not superseded: no newer grade of ours is there"
    assert row["reason"] == "platform_rejected"
    assert "before last updated timestamp" in row["platform_message"]
    assert row["superseded_by"] is None


# --- 11. Concurrent sends ---------------------------------------------------------------------


async def test_twenty_concurrent_sends_leave_one_pending_job_per_student(
    classroom: Classroom, context: AppContext
) -> None:
    for student in classroom.students:
        await classroom.launch(student.student_id)
        await classroom.work(student.student_id, "7")

    answers = await asyncio.gather(*(send(classroom, whole_class(classroom)) for _ in range(20)))

    assert all(len(answer["jobs"]) == 3 for answer in answers)
    async with context.sessions() as session:
        jobs = list(await session.scalars(select(PassbackJob).order_by(PassbackJob.id)))
    assert len(jobs) == 60
    for student in classroom.students:
        mine = [job for job in jobs if job.student_id == student.student_id]
        pending = [job for job in mine if job.status == "pending"]
        assert len(pending) == 1, [(job.id, job.status) for job in mine]
        assert pending[0].id == max(job.id for job in mine), "the newest one is left"
        older = [job for job in mine if job is not pending[0]]
        assert all(job.status == "superseded" and job.superseded_by for job in older)
        stamps = [job.score_timestamp for job in mine]
        assert stamps == sorted(set(stamps)), "strictly increasing in the order queued"


# --- An automatic grade and a manual send at the same moment --------------------------------


async def _hold_student_work_row(context: AppContext, classroom: Classroom) -> AsyncConnection:
    """Lock the student's work row (PostgreSQL), so the intake's statement, once its snapshot
    is taken, waits on it; a send is not held up (it only reads that row)."""
    holder = await context.engine.connect()
    await holder.execute(
        text(
            "SELECT 1 FROM student_work WHERE formative_id = :f AND student_id = 's-1' FOR UPDATE"
        ),
        {"f": classroom.formative_id},
    )
    return holder


async def _intake_waits_on_a_lock(context: AppContext) -> bool:
    async with context.engine.connect() as probe:
        waiting = await probe.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE '%submission_events%'"
            )
        )
    return bool(waiting)


async def test_an_automatic_grade_and_a_manual_send_at_the_same_moment_land_one_grade(
    classroom: Classroom, context: AppContext
) -> None:
    """On PostgreSQL the intake's statement (no pair lock) and a send each miss the other's
    job and both stay pending; on SQLite writers are serialised. Either way one grade lands,
    the job queued last (SPEC §2.5), and the other is superseded without being sent."""
    await classroom.launch("s-1")
    await classroom.work("s-1", "5")
    await classroom.sandbox.admin.clear_requests()

    postgresql = context.engine.dialect.name == "postgresql"
    holder = await _hold_student_work_row(context, classroom) if postgresql else None
    try:
        automatic = asyncio.create_task(classroom.work("s-1", "9", automatic=True))
        if holder is not None:
            # The intake's one statement has its snapshot and waits: the send commits before
            # it, and neither sees the other's job (the intake takes no pair lock).
            for _ in range(500):
                if await _intake_waits_on_a_lock(context):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the intake never reached the held row")
        manual = asyncio.create_task(
            send(
                classroom,
                {"select": {"student_ids": ["s-1"]}, "overrides": {"s-1": {"points": 15}}},
            )
        )
        if holder is not None:
            await manual
            await holder.rollback()
    finally:
        if holder is not None:
            await holder.close()
    event, answer = await asyncio.gather(automatic, manual)
    assert event["decision"] == "queued"
    assert len(answer["jobs"]) == 1

    await deliver_all(context)

    jobs = await jobs_of(context, "s-1")
    assert len(jobs) == 2
    newer = max(jobs, key=lambda job: job.id)
    older = min(jobs, key=lambda job: job.id)
    assert (newer.status, older.status) == ("delivered", "superseded")
    assert older.superseded_by == newer.id
    assert older.attempt_count == 0, "the older grade was never sent"
    posts = await classroom.sandbox.admin.requests(path_contains="/scores", method="POST")
    assert len(posts) == 1, "exactly one grade went to Canvas"
    assert await classroom.gradebook_score("s-1") == newer.score_given
