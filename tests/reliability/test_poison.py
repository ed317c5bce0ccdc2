"""Poison: platforms answering garbage (huge, deep, absurd numbers, wrong types, HTML,
truncated, nothing at all) and a job row that cannot be read, while a healthy Canvas gets its
grades. Every bad answer is an attempt with an outcome and backoff; the others' grades arrive
as if nothing were wrong."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from app.context import AppContext
from app.delivery import DeliveryEngine
from app.store.models import JobStatus, PassbackJob
from tests.lti.world import make_world, quick_policy
from tests.reliability.poison import (
    attempts_by_job,
    bad_platforms,
    enqueue_bad,
    job_lines,
    statuses,
)
from tests.support.garbage_platform import expected_codes
from tests.support.poison import write_unreadable_time
from tests.support.sandbox import RunningSandbox, run_sandbox

HEALTHY_STUDENTS = 60
JOBS_PER_BAD_PLATFORM = 4
BAD_KINDS = [
    "token_expires_infinity",
    "points_1e400",
    "points_4000_digits",
    "line_item_deep",
    "line_item_html",
    "line_item_huge",
    "line_item_gzip_bomb",
    "score_error_deep",
    "hang",
]
"""One of each family (tests/lti/test_garbage_answers.py tries every kind on its own)."""
RUN_BOUND_SECONDS = 90.0


@pytest.fixture
async def canvas() -> AsyncIterator[RunningSandbox]:
    async with run_sandbox() as sandbox:
        await sandbox.admin.set_throttle(enabled=False)
        await sandbox.admin.set_faults(latency_ms=20)
        yield sandbox


@pytest.mark.timeout(180)
async def test_garbage_platforms_and_an_unreadable_row_never_hold_up_a_healthy_canvas(
    soak_context: AppContext, canvas: RunningSandbox
) -> None:
    context = soak_context
    world = await make_world(context, canvas, students=HEALTHY_STUDENTS)
    # Each bad platform in a process of its own (making garbage costs the test's process
    # nothing), but the one whose posts are counted.
    far_kinds = [kind for kind in BAD_KINDS if kind != "score_error_deep"]
    async with (
        bad_platforms(context, far_kinds, in_process=False) as far,
        bad_platforms(context, ["score_error_deep"]) as near,
    ):
        bad = far + near
        for platform in bad:
            await enqueue_bad(context, platform, JOBS_PER_BAD_PLATFORM)
        [poisoned, *healthy] = await world.enqueue_many(world.students, score=7)
        await write_unreadable_time(context.engine, poisoned, "score_timestamp")
        engine = DeliveryEngine(
            context, policy=quick_policy(backoff_first=0.2, backoff_max=1.0, concurrency=32)
        )
        with job_lines() as lines:
            started = time.monotonic()
            await engine.start()
            try:
                while (await statuses(context, healthy))[JobStatus.delivered] < len(healthy):
                    assert time.monotonic() - started < RUN_BOUND_SECONDS
                    await asyncio.sleep(0.1)
                await asyncio.sleep(4.0)  # a few more tries of the bad jobs
            finally:
                await engine.stop(grace=0.5)

        assert (await statuses(context, healthy)) == {JobStatus.delivered: len(healthy)}
        assert (await statuses(context, [poisoned])) == {JobStatus.quarantined: 1}
        cells = [await world.cell(student) for student in world.students[1:]]
        assert {cell["score"] for cell in cells} == {"7"}
        assert {cell["attempt"] for cell in cells} == {1}

        codes = expected_codes()
        tried = 0
        for platform in bad:
            attempts = await attempts_by_job(context, platform.job_ids)
            kind = platform.server.kind
            tried += sum(1 for outcomes in attempts.values() if outcomes)
            for job_id, outcomes in attempts.items():
                unexpected = set(outcomes) - {codes[kind], "released", "result_unreadable"}
                assert not unexpected, (kind, outcomes)
                # One line per try at most (the delivered ones are quiet), never a traceback.
                assert lines.lines[job_id] <= sum(outcomes.values()), (kind, outcomes)
            if kind == "score_error_deep":
                # Each post is a try of its own: no re-POST per cycle beyond the recorded ones.
                tries = sum(sum(outcomes.values()) for outcomes in attempts.values())
                assert platform.server.calls["scores"] <= tries
            assert (await statuses(context, platform.job_ids))[JobStatus.delivered] == 0
        assert lines.tracebacks == 0
        assert tried >= len(bad)  # the bad platforms were tried meanwhile


@pytest.mark.timeout(120)
async def test_a_job_answered_garbage_until_its_deadline_fails_as_unavailable(
    soak_context: AppContext, canvas: RunningSandbox
) -> None:
    context = soak_context
    async with bad_platforms(context, ["points_1e400"]) as [bad]:
        await enqueue_bad(context, bad, 1)
        engine = DeliveryEngine(context, policy=quick_policy())
        await engine.drain()
        canvas.clock.advance(timedelta(hours=25).total_seconds())
        await engine.drain()
    [job_id] = bad.job_ids
    attempts = await attempts_by_job(context, [job_id])
    assert set(attempts[job_id]) == {"invalid_answer"}
    async with context.sessions() as session:
        job = await session.get(PassbackJob, job_id)
        assert job is not None
        assert (job.status, job.outcome_code) == (JobStatus.failed, "platform_unavailable")
