"""A throttling storm: Canvas refuses a developer key's requests for a while (the key's other
users emptied its bucket). The lane holds its jobs and probes with one request at a time, so
the storm costs a few refused requests in all, not several per job."""

from __future__ import annotations

import asyncio
from collections import Counter

from sqlalchemy import func, select

from app.context import AppContext
from app.delivery import DeliveryEngine
from app.store.models import JobAttempt, JobStatus
from tests.lti.world import World, make_world, quick_policy
from tests.support.sandbox import RunningSandbox

STUDENTS = 40
STORM_LEVEL = 630.0
"""The bucket's level when deliveries start: 30 units over Canvas's high-water mark (600),
which it leaks at 10 a second: Canvas refuses every request for 3 s."""
MAX_TRIES_PER_JOB = 3
STORM_BOUND_SECONDS = 60.0


async def tries_per_job(world: World) -> Counter[int]:
    """How many jobs made 1, 2, … tries (attempt rows)."""
    query = select(func.count()).select_from(JobAttempt).group_by(JobAttempt.job_id)
    async with world.context.sessions() as session:
        return Counter((await session.scalars(query)).all())


async def test_a_throttling_storm_costs_each_job_at_most_a_few_tries(
    lti_context: AppContext, sandbox: RunningSandbox
) -> None:
    world = await make_world(lti_context, sandbox, students=STUDENTS)  # Canvas's throttle on
    await sandbox.admin.set_faults(latency_ms=25)
    await world.enqueue_many(world.students)
    await sandbox.admin.fill_bucket(sandbox.bucket_key(world.client_id), STORM_LEVEL)
    engine = DeliveryEngine(lti_context, policy=quick_policy(concurrency=32))
    await engine.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STORM_BOUND_SECONDS
        while {job.status for job in await world.jobs()} != {JobStatus.delivered}:
            assert loop.time() < deadline, Counter(job.status for job in await world.jobs())
            await asyncio.sleep(0.1)
    finally:
        await engine.stop()

    tries = await tries_per_job(world)
    assert sum(tries.values()) == STUDENTS
    assert max(tries) <= MAX_TRIES_PER_JOB, tries
    ags = await sandbox.admin.requests(path_contains="/api/lti/courses/")
    refused = [request for request in ags if request["throttled"]]
    # The requests in flight when the storm hit, then one probe per pause (pauses double).
    assert 1 <= len(refused) <= 15, len(refused)
    assert engine.stats.throttled == len(refused)
    for job in await world.jobs():
        assert job.tries_since_queued == 1  # refusals do not count toward the backoff
    cells = [await world.cell(student) for student in world.students]
    assert {(cell["score"], cell["attempt"]) for cell in cells} == {("7", 1)}


async def test_jobs_queued_during_a_storm_wait_in_the_queue(
    lti_context: AppContext, sandbox: RunningSandbox
) -> None:
    world = await make_world(lti_context, sandbox, students=30)
    await sandbox.admin.fill_bucket(sandbox.bucket_key(world.client_id), STORM_LEVEL)
    engine = DeliveryEngine(lti_context, policy=quick_policy(concurrency=32))
    await world.enqueue(world.students[0])
    await engine.start()
    try:
        lane = None
        while lane is None or not lane.throttled:
            await asyncio.sleep(0.02)
            lane = engine.lane(world.platform.id)
        await world.enqueue_many(world.students[1:])
        await asyncio.sleep(0.3)
        # While the lane is throttled it takes on a slot's worth of jobs at most.
        assert lane.throttled and engine.in_flight <= 6
        while {job.status for job in await world.jobs()} != {JobStatus.delivered}:
            await asyncio.sleep(0.1)
    finally:
        await engine.stop()
    cells = [await world.cell(student) for student in world.students]
    assert {(cell["score"], cell["attempt"]) for cell in cells} == {("7", 1)}
