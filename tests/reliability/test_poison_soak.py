"""A soak with one platform answering garbage (a 300 MB answer, read up to the 1 MiB cap)
and one that never answers, while 500 grades go to a healthy Canvas: they arrive at ≥ 90% of
the rate they have without the bad platforms, the log says at most one line per try, and
memory stays flat.

One engine runs throughout, as in a service: the grades come once it has met the bad
platforms (their hosts rest, app.delivery.lanes), as they would to a service that has been
running while those platforms failed.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest

from app.context import AppContext
from app.delivery import DeliveryEngine
from app.store.models import JobStatus
from tests.lti.world import make_world, quick_policy
from tests.reliability.figures import Figures
from tests.reliability.poison import (
    BadPlatform,
    attempts_by_job,
    bad_platforms,
    enqueue_bad,
    job_lines,
    statuses,
)
from tests.support.sandbox import RunningSandbox, run_sandbox

GRADES = 500
BAD_JOBS = 50
"""Per bad platform."""
TARGET_RATE_SHARE = 0.9
"""Issue 12's target. The bad hosts rest after a few tries (app.delivery.lanes): their jobs
wait in the database instead of being read and refused in the delivering event loop (before
rests: 0.76-0.94 on this 2-core machine; with them 1.0)."""
ROUNDS = 3
"""A round is a run without, a run with, and a run without the bad platforms (the database
grows from run to run: the runs alone bracket the one beside); the first round that meets
the share ends the test (rates on a shared machine vary from run to run whatever runs
beside: one unlucky run must not decide). The bad jobs of a failed round give up (their
deadline passes) before the next."""
RUN_BOUND_SECONDS = 90.0
MEMORY_GROWTH_MB = 100


@pytest.fixture
async def canvas() -> AsyncIterator[RunningSandbox]:
    async with run_sandbox() as sandbox:
        await sandbox.admin.set_throttle(enabled=False)
        await sandbox.admin.set_faults(latency_ms=50)
        yield sandbox


@asynccontextmanager
async def running(engine: DeliveryEngine) -> AsyncIterator[None]:
    await engine.start()
    try:
        yield
    finally:
        await engine.stop(grace=0.5)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def grades_per_second(
    context: AppContext, canvas: RunningSandbox, engine: DeliveryEngine
) -> float:
    """Queue GRADES grades to a new course of the healthy Canvas; the running engine delivers
    them all."""
    world = await make_world(context, canvas, students=GRADES)
    started = time.monotonic()  # the engine delivers while they are queued
    job_ids = await world.enqueue_many(world.students, score=7)
    engine.wake()
    while (await statuses(context, job_ids))[JobStatus.delivered] < GRADES:
        assert time.monotonic() - started < RUN_BOUND_SECONDS
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    assert (await statuses(context, job_ids)) == {JobStatus.delivered: GRADES}
    return GRADES / elapsed


async def failing_already(engine: DeliveryEngine, bad: list[BadPlatform]) -> None:
    """Wait until the engine has met each bad platform (its host rests): the grades come
    while they fail, as they would to a service that has been running."""
    started = time.monotonic()
    while not all(
        (lane := engine.lane(platform.platform.id)) is not None and lane.rests for platform in bad
    ):
        assert time.monotonic() - started < RUN_BOUND_SECONDS
        await asyncio.sleep(0.05)


@pytest.mark.timeout(300)
async def test_500_grades_flow_at_full_rate_beside_a_garbage_and_a_hanging_platform(
    soak_context: AppContext, canvas: RunningSandbox, figures: Figures
) -> None:
    context = soak_context
    shares: list[float] = []
    engine = DeliveryEngine(context, policy=quick_policy(concurrency=64))
    async with (
        bad_platforms(context, ["line_item_huge", "hang"], in_process=False) as bad,
        running(engine),
    ):
        for _ in range(ROUNDS):
            before = await grades_per_second(context, canvas, engine)
            peak_before = peak_rss_mb()
            with job_lines() as lines:
                for platform in bad:
                    await enqueue_bad(context, platform, BAD_JOBS)
                engine.wake()
                await failing_already(engine, bad)
                beside = await grades_per_second(context, canvas, engine)
            growth = peak_rss_mb() - peak_before
            canvas.clock.advance(timedelta(hours=25).total_seconds())  # the bad jobs give up
            after = await grades_per_second(context, canvas, engine)
            alone = (before + after) / 2  # the runs alone bracket the run beside them
            shares.append(beside / alone)
            figures.record(f"round_{len(shares)}_grades_per_second_alone", round(alone, 1))
            figures.record(f"round_{len(shares)}_grades_per_second_beside_bad", round(beside, 1))
            assert growth < MEMORY_GROWTH_MB, growth

            bad_ids = [job_id for platform in bad for job_id in platform.job_ids]
            attempts = await attempts_by_job(context, bad_ids)
            tries = {job_id: sum(outcomes.values()) for job_id, outcomes in attempts.items()}
            assert sum(tries.values()) > 0
            assert all(lines.lines[job_id] <= tries[job_id] for job_id in bad_ids), lines.lines
            assert lines.tracebacks == 0
            outcomes = {outcome for counted in attempts.values() for outcome in counted}
            assert outcomes <= {"invalid_answer", "timeout", "released"}, outcomes
            figures.record(f"round_{len(shares)}_log_lines", lines.total)
            figures.record(f"round_{len(shares)}_bad_job_tries", sum(tries.values()))
            figures.record(f"round_{len(shares)}_peak_rss_growth_mb", round(growth, 1))
            if shares[-1] >= TARGET_RATE_SHARE:
                break
    figures.record("rate_share_beside_bad_platforms", [round(share, 3) for share in shares])
    assert max(shares) >= TARGET_RATE_SHARE, shares
