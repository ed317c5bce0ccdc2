"""Line item reads: shared while in progress, kept a few seconds for jobs queued before they
began (app.delivery.reads), and never at the cost of points changed before a job was queued.

A kept read serves a job only if it began strictly after the job was queued, so the world's
clock runs here, or is frozen only once the jobs are queued.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy import update

from app.context import AppContext
from app.delivery import DeliveryEngine, LanePolicy
from app.store.db import transaction
from app.store.models import JobStatus, PassbackJob
from tests.lti.world import World, make_world, quick_policy
from tests.support.sandbox import RunningSandbox

SCORES = r"/scores$"


async def line_item_reads(world: World) -> int:
    path = urlsplit(world.line_item_url).path
    requests = await world.sandbox.admin.requests(path_contains=path, method="GET")
    return sum(1 for request in requests if request["path"] == path)


async def test_jobs_queued_before_a_line_item_read_are_all_sent_on_it(
    lti_context: AppContext, sandbox: RunningSandbox
) -> None:
    world = await make_world(lti_context, sandbox, students=20)
    # One request at a time: the jobs are claimed a few at a time, each claim after the
    # last one's jobs ended, so no read is still in progress for the next claim to join.
    one_lane = LanePolicy(initial_limit=1.0, max_limit=1.0)
    keep = timedelta(minutes=5)  # however slow the machine, no refresh comes due
    policy = quick_policy(lanes=one_lane, line_item_keep=keep)
    engine = DeliveryEngine(world.context, policy=policy)
    await world.enqueue_many(world.students)
    await engine.drain()

    assert {job.status for job in await world.jobs()} == {JobStatus.delivered}
    assert len(await world.score_posts()) == 20
    assert await line_item_reads(world) == 1


async def test_a_job_queued_after_a_line_item_read_reads_the_points_again(
    world: World, engine: DeliveryEngine
) -> None:
    first, second = world.students[:2]
    await world.enqueue(first, score=7, max_score=10)
    await engine.drain()
    await world.sandbox.admin.set_assignment_points(world.assignment_id, "20")
    later = await world.enqueue(second, score=7, max_score=10)
    await engine.drain()

    assert (await world.cell(first))["score"] == "7"
    assert (await world.cell(second))["score"] == "14"
    assert (await world.job(later)).canvas_points == 20
    assert await line_item_reads(world) == 2


async def test_a_retry_reads_the_line_item_again(world: World, engine: DeliveryEngine) -> None:
    student = world.students[0]
    await world.sandbox.admin.add_fault(
        "error", status=500, path=SCORES, method="POST", remaining=1
    )
    job_id = await world.enqueue(student, score=7, max_score=10)
    await engine.drain()
    assert (await world.job(job_id)).status == JobStatus.pending
    await world.sandbox.admin.set_assignment_points(world.assignment_id, "20")
    world.clock.advance(2.0)  # past the retry's backoff, within the read's keeping
    await engine.drain()

    job = await world.job(job_id)
    assert (job.status, job.canvas_points) == (JobStatus.delivered, 20)
    assert (await world.cell(student))["score"] == "14"
    assert await line_item_reads(world) == 2


async def delay(world: World, job_id: int, seconds: float) -> None:
    """Make a queued job due only `seconds` from now (its first try is still to come)."""
    async with transaction(world.context.sessions) as session:
        await session.execute(
            update(PassbackJob)
            .where(PassbackJob.id == job_id)
            .values(next_attempt_at=world.clock() + timedelta(seconds=seconds))
        )


async def test_a_kept_read_half_its_age_serves_and_is_read_again_meanwhile(
    world: World, engine: DeliveryEngine
) -> None:
    first, second, third = world.students[:3]
    await world.enqueue(first, score=7, max_score=10)
    served_kept = await world.enqueue(second, score=7, max_score=10)
    served_fresh = await world.enqueue(third, score=7, max_score=10)
    half = engine.policy.line_item_keep.total_seconds() / 2
    await delay(world, served_kept, half + 0.5)
    await delay(world, served_fresh, half + 1.0)
    world.clock.freeze()  # after the queueing: reads begin later than it, and age by steps
    await engine.drain()  # the first job reads the points: 10
    await world.sandbox.admin.set_assignment_points(world.assignment_id, "20")

    world.clock.advance(half + 0.5)
    await engine.drain()  # served by the kept read, which it also starts reading again
    for _ in range(100):
        if await line_item_reads(world) == 2:
            break
        await asyncio.sleep(0.02)
    world.clock.advance(0.5)
    await engine.drain()  # queued before the second read began: served by it

    # Points as read for each job (Canvas scales either grade to its current 20 points).
    assert (await world.job(served_kept)).canvas_points == 10
    assert (await world.job(served_fresh)).canvas_points == 20
    assert (await world.cell(third))["score"] == "14"
    assert await line_item_reads(world) == 2


async def test_a_kept_read_serves_no_job_after_its_time(
    world: World, engine: DeliveryEngine
) -> None:
    early, late = world.students[:2]
    await world.enqueue(early, score=7, max_score=10)
    late_job = await world.enqueue(late, score=7, max_score=10)
    keep = engine.policy.line_item_keep
    await delay(world, late_job, 2 * keep.total_seconds())
    await engine.drain()  # the early job reads the line item; the late one is not due
    await world.sandbox.admin.set_assignment_points(world.assignment_id, "20")
    world.clock.advance((3 * keep).total_seconds())
    await engine.drain()

    job = await world.job(late_job)
    assert (job.attempt_count, job.canvas_points) == (1, 20)  # its first try, read anew
    assert (await world.cell(early))["score"] == "7"
    assert (await world.cell(late))["score"] == "14"
    assert await line_item_reads(world) == 2


async def test_a_read_that_began_before_a_job_was_queued_is_not_kept_for_it(
    world: World, engine: DeliveryEngine
) -> None:
    world.clock.freeze()  # queued and read at the same instant: not strictly after
    first, second = world.students[:2]
    await world.enqueue(first)
    await engine.drain()
    await world.enqueue(second)
    await engine.drain()
    assert await line_item_reads(world) == 2
