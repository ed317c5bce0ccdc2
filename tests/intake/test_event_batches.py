"""Submission events written in batches: each event keeps its own answer, facts and job, as
if it had come alone (on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DataError, DBAPIError

from app.context import AppContext
from app.intake.event_in import SubmissionEventIn
from app.intake.events import Decision, EventAnswer, EventIdReusedError, receive_events
from app.store.models import Formative, PassbackJob, StudentWork, SubmissionEvent
from tests.api.canvas_world import event
from tests.support.launches import ensure_platform, launch_from_assignment

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DEADLINE = timedelta(hours=24)


async def launch(context: AppContext, *student_ids: str, lti_user_id: str | None = None) -> None:
    """The students opened formative fm-42 from its Canvas assignment."""
    async with context.sessions() as session, session.begin():
        await ensure_platform(session, NOW, "canvas")
        for student_id in student_ids:
            await launch_from_assignment(
                session,
                NOW,
                platform_id="canvas",
                formative_id="fm-42",
                student_id=student_id,
                class_id="c-3",
                lineitem_id="7",
                lti_user_id=lti_user_id,
            )


def submitted(student_id: str, **changes: Any) -> SubmissionEventIn:
    fields = {
        "event_id": f"evt-{student_id}",
        "student.id": student_id,
        "student.name": f"Student {student_id}",
        **changes,
    }
    body = event(**fields)
    return SubmissionEventIn.model_validate(body)


async def receive(
    context: AppContext, events: Sequence[SubmissionEventIn]
) -> list[EventAnswer | Exception]:
    return await receive_events(context.engine, events, now=NOW, deadline=DEADLINE)


def answer_of(outcome: EventAnswer | Exception) -> EventAnswer:
    assert isinstance(outcome, EventAnswer), outcome
    return outcome


async def count(context: AppContext, entity: Any) -> int:
    async with context.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(entity)) or 0)


async def test_each_event_of_a_batch_gets_its_own_answer_and_job(context: AppContext) -> None:
    await launch(context, "s-1", "s-2", "s-3")
    events = [submitted(f"s-{n}", score=n) for n in range(1, 6)]  # s-4, s-5 never launched

    outcomes = [answer_of(outcome) for outcome in await receive(context, events)]

    assert [outcome.decision for outcome in outcomes] == [Decision.queued] * 3 + [
        Decision.not_eligible
    ] * 2
    assert all(outcome.first_time for outcome in outcomes)
    async with context.sessions() as session:
        jobs = (await session.scalars(select(PassbackJob).order_by(PassbackJob.id))).all()
        work = {row.student_id: row.score for row in (await session.scalars(select(StudentWork)))}
    assert [(job.student_id, job.score, job.event_id) for job in jobs] == [
        (f"s-{n}", Decimal(n), f"evt-s-{n}") for n in range(1, 4)
    ]
    for job, outcome in zip(jobs, outcomes[:3], strict=True):
        assert f'"job_id":{job.id}'.encode() in outcome.body
    assert work == {f"s-{n}": Decimal(n) for n in range(1, 6)}
    assert await count(context, SubmissionEvent) == 5


async def test_known_events_in_a_batch_get_their_first_answers(context: AppContext) -> None:
    await launch(context, "s-1", "s-3")
    first = answer_of((await receive(context, [submitted("s-1")]))[0])
    reused = submitted("s-2", event_id="evt-s-1")  # another student's event, same id

    repeat, new = await receive(context, [submitted("s-1"), submitted("s-3")])
    (conflict,) = await receive(context, [reused])

    assert answer_of(repeat).body == first.body and not answer_of(repeat).first_time
    assert answer_of(new).decision == Decision.queued and answer_of(new).first_time
    assert isinstance(conflict, EventIdReusedError)
    assert await count(context, PassbackJob) == 2
    assert await count(context, StudentWork) == 2


async def test_the_newest_event_of_a_formative_in_a_batch_sets_its_facts(
    context: AppContext,
) -> None:
    older = submitted("s-1", occurred_at="2026-11-27T10:00:00Z", **{"formative.title": "Old"})
    newest = submitted("s-2", occurred_at="2026-11-27T11:00:00Z", **{"formative.title": "New"})
    middle = submitted("s-3", occurred_at="2026-11-27T10:30:00Z", **{"formative.title": "Mid"})

    await receive(context, [older, newest, middle])

    async with context.sessions() as session:
        formative = await session.get(Formative, "fm-42")
    assert formative is not None and formative.title == "New"


async def test_two_batches_racing_for_one_canvas_pair_queue_one_passback(
    context: AppContext,
) -> None:
    # s-1 and s-2 are the same Canvas user on the same line item: one automatic passback.
    await launch(context, "s-1", "s-2", lti_user_id="lti-twin")
    await launch(context, "s-3", "s-4")

    outcomes = await asyncio.gather(
        receive(context, [submitted("s-1"), submitted("s-3")]),
        receive(context, [submitted("s-2"), submitted("s-4")]),
    )

    students = ("s-1", "s-3", "s-2", "s-4")
    answers = [*outcomes[0], *outcomes[1]]
    decisions = {
        student: answer_of(outcome).decision
        for student, outcome in zip(students, answers, strict=True)
    }
    assert decisions["s-3"] == decisions["s-4"] == Decision.queued
    assert sorted([decisions["s-1"], decisions["s-2"]]) == [Decision.not_eligible, Decision.queued]
    assert await count(context, PassbackJob) == 3
    assert await count(context, SubmissionEvent) == 4


async def test_an_event_the_database_refuses_fails_alone_in_its_batch(
    context: AppContext, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite stores NUL characters; PostgreSQL refuses them")
    await launch(context, "s-1", "s-3")
    refused = submitted("s-2", **{"student.name": "nul\x00byte"})

    outcomes = await receive(context, [submitted("s-1"), refused, submitted("s-3")])

    assert answer_of(outcomes[0]).decision == answer_of(outcomes[2]).decision == Decision.queued
    assert isinstance(outcomes[1], DataError | DBAPIError)
    assert await count(context, SubmissionEvent) == 2
    assert await count(context, PassbackJob) == 2


async def test_events_posted_at_once_are_written_in_batches(context: AppContext) -> None:
    await launch(context, *(f"s-{n}" for n in range(40)))
    events = [submitted(f"s-{n}") for n in range(60)]

    answers = await asyncio.gather(*(context.events.receive(event) for event in events))

    assert [answer.decision for answer in answers] == [Decision.queued] * 40 + [
        Decision.not_eligible
    ] * 20
    assert await count(context, PassbackJob) == 40
    sizes = context.metrics.intake_batch_events.collect()[0].samples
    batches = next(sample.value for sample in sizes if sample.name.endswith("_count"))
    assert batches < len(events)  # several events per batch


async def test_events_that_cannot_be_queued_take_no_job_ids(context: AppContext) -> None:
    await launch(context, *(f"s-{n}" for n in range(6)))
    started = [submitted(f"s-{n}", type="started", submitted_at=None) for n in range(3)]
    events = [started[0], submitted("s-3"), started[1], submitted("s-4"), started[2]]

    await receive(context, events)
    await receive(context, [submitted("s-5")])

    async with context.sessions() as session:
        ids = list((await session.scalars(select(PassbackJob.id).order_by(PassbackJob.id))).all())
    assert len(ids) == 3 and ids == list(range(ids[0], ids[0] + 3))
