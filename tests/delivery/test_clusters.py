"""One registration, several Canvas hosts on several database clusters (SPEC §2.5).

The sandbox plays four hosts: the first two on one cluster (one rate bucket), the others on
clusters of their own. Each host gets its own assignment, so its jobs are its own."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event

from app.context import AppContext
from app.delivery import DeliveryEngine
from app.delivery.buckets import JOBS_PER_SLOT
from app.store.models import JobStatus, job_origin
from tests.lti.world import World, make_world, quick_policy
from tests.support.sandbox import CanvasHost, RunningSandbox

REST = 30.0
"""A host's first rest in the rest test: longer than any backoff of quick_policy."""
STORM_LEVEL = 640.0
"""40 units over the mark, leaking 10 a second: the cluster refuses everything for 4 s."""


async def line_item_on(world: World, host: CanvasHost, name: str) -> str:
    """A new assignment of the world's course, its line item addressed to `host`."""
    created = await world.sandbox.admin.create_assignment(
        world.course_id, name=name, points="10", client_id=world.client_id
    )
    return host.url_of(created["line_item_url"])


async def enqueue_for(world: World, line_item: str) -> list[int]:
    return [await world.enqueue(student, line_item_url=line_item) for student in world.students]


async def statuses(world: World, line_item: str) -> Counter[str]:
    return Counter(job.status for job in await world.jobs() if job.lineitem_url == line_item)


async def until(
    check: Callable[[], bool] | None = None, *, world: World, done: str, within: float = 60.0
) -> None:
    """Wait (not a timing assertion) until every job of line item `done` is delivered (or
    superseded by a newer one)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    finished = {JobStatus.delivered, JobStatus.superseded}
    while not set((await statuses(world, done)).elements()) <= finished:
        assert loop.time() < deadline, await statuses(world, done)
        if check is not None:
            check()
        await asyncio.sleep(0.02)


async def failing_and_healthy(
    context: AppContext, sandbox: RunningSandbox, *, latency_ms: int = 0
) -> tuple[World, CanvasHost, str, str]:
    """A world of 30 students (no throttle) with an assignment on a host answering 500 to
    every AGS call and one on a healthy host: the world, the failing host, the line items."""
    world = await make_world(context, sandbox, students=30)
    await sandbox.admin.set_throttle(enabled=False)
    failing, healthy = sandbox.hosts[2], sandbox.hosts[3]
    failing_item = await line_item_on(world, failing, "Failing")
    healthy_item = await line_item_on(world, healthy, "Healthy")
    rule = {"kind": "error", "status": 500, "host": failing.netloc, "path": "^/api/lti/"}
    await sandbox.admin.set_faults(latency_ms=latency_ms, rules=[rule])
    return world, failing, failing_item, healthy_item


def when(chosen: list[dict[str, Any]], every: list[dict[str, Any]]) -> list[str]:
    """Where each chosen request came among all (its host and its seconds after the first):
    what a failed assertion about some of them should show."""
    start = datetime.fromisoformat(every[0]["at"]) if every else None
    return [
        f"{request['request_headers']['host']}@"
        f"{(datetime.fromisoformat(request['at']) - start).total_seconds():.2f}s"
        for request in chosen
        if start is not None
    ]


def sent_to(requests: list[dict[str, Any]], host: CanvasHost) -> list[dict[str, Any]]:
    return [request for request in requests if request["request_headers"]["host"] == host.netloc]


async def test_hosts_on_two_clusters_are_throttled_independently(
    lti_context: AppContext, sandbox: RunningSandbox
) -> None:
    world = await make_world(lti_context, sandbox, students=30)  # Canvas's throttle on
    stormy, calm = sandbox.hosts[0], sandbox.hosts[2]
    assert stormy.cluster != calm.cluster
    stormy_item = await line_item_on(world, stormy, "Stormy")
    calm_item = await line_item_on(world, calm, "Calm")
    await sandbox.admin.set_faults(latency_ms=100)
    await sandbox.admin.fill_bucket(sandbox.bucket_key(world.client_id, stormy), STORM_LEVEL)
    await enqueue_for(world, stormy_item)
    await enqueue_for(world, calm_item)
    engine = DeliveryEngine(lti_context, policy=quick_policy())
    await engine.start()
    try:
        calm_done_while_storm: list[bool] = []

        def storm_on() -> None:
            lane = engine.lane(world.platform.id, job_origin(stormy_item))
            calm_done_while_storm.append(lane is not None and lane.throttled)

        await until(storm_on, world=world, done=calm_item)
        # The calm cluster's grades all landed while the stormy one was still refusing.
        assert calm_done_while_storm and calm_done_while_storm[-1]
        await until(world=world, done=stormy_item)
    finally:
        await engine.stop()

    stormy_lane = engine.lane(world.platform.id, job_origin(stormy_item))
    calm_lane = engine.lane(world.platform.id, job_origin(calm_item))
    assert stormy_lane is not None and calm_lane is not None
    assert stormy_lane.group is not calm_lane.group
    ags = await sandbox.admin.requests(path_contains="/api/lti/courses/")
    assert any(request["throttled"] for request in sent_to(ags, stormy))
    assert not any(request["throttled"] for request in sent_to(ags, calm))


async def test_two_hosts_on_one_cluster_end_in_one_group_and_are_seldom_throttled(
    lti_context: AppContext, sandbox: RunningSandbox
) -> None:
    world = await make_world(lti_context, sandbox, students=200)  # Canvas's throttle on
    first, second = sandbox.hosts[0], sandbox.hosts[1]
    assert first.cluster == second.cluster
    items = [await line_item_on(world, host, f"On {host.netloc}") for host in (first, second)]
    # Canvas's pace (a busy test machine's event loop counts answers late at a quicker one).
    await sandbox.admin.set_faults(latency_ms=300)
    for item in items:
        await enqueue_for(world, item)
    engine = DeliveryEngine(lti_context, policy=quick_policy())
    await engine.start()
    try:
        for item in items:
            await until(world=world, done=item, within=120)
    finally:
        await engine.stop()

    lanes = [engine.lane(world.platform.id, job_origin(item)) for item in items]
    assert lanes[0] is not None and lanes[1] is not None
    assert lanes[0].group is lanes[1].group
    ags = await sandbox.admin.requests(path_contains="/api/lti/courses/")
    throttled = [request for request in ags if request["throttled"]]
    assert len(throttled) < 0.01 * len(ags), (len(throttled), len(ags), when(throttled, ags))


async def test_a_failing_host_shrinks_its_own_lane_only(
    lti_context: AppContext, sandbox: RunningSandbox
) -> None:
    world, _, failing_item, healthy_item = await failing_and_healthy(
        lti_context, sandbox, latency_ms=20
    )
    await enqueue_for(world, failing_item)
    await enqueue_for(world, healthy_item)
    engine = DeliveryEngine(lti_context, policy=quick_policy())
    await engine.start()
    try:
        await until(world=world, done=healthy_item)
    finally:
        await engine.stop()

    failing_lane = engine.lane(world.platform.id, job_origin(failing_item))
    healthy_lane = engine.lane(world.platform.id, job_origin(healthy_item))
    assert failing_lane is not None and healthy_lane is not None
    policy = engine.policy.lanes
    # Shrunk (how far depends on how many failures came before the host began to rest).
    assert failing_lane.limit < policy.initial_limit
    assert healthy_lane.limit > policy.initial_limit
    assert healthy_lane.group.limit > policy.initial_limit
    assert JobStatus.delivered not in await statuses(world, failing_item)


async def test_a_host_that_answers_nothing_usable_rests_with_its_jobs_in_the_database(
    lti_context: AppContext, sandbox: RunningSandbox
) -> None:
    world, failing, failing_item, healthy_item = await failing_and_healthy(lti_context, sandbox)
    world.clock.freeze()  # retries come due, and the rest ends, when the test moves the clock
    failing_jobs = await enqueue_for(world, failing_item)
    await enqueue_for(world, healthy_item)
    lanes = replace(quick_policy().lanes, rest_first=REST, rest_max=4 * REST)
    engine = DeliveryEngine(lti_context, policy=quick_policy(lanes=lanes))
    lane_of = job_origin(failing_item)
    await engine.start()
    try:
        await until(world=world, done=healthy_item)
        lane = engine.lane(world.platform.id, lane_of)
        assert lane is not None
        for _ in range(200):  # the failing jobs' retries come due as the clock moves
            if lane.resting(world.clock()):
                if not engine.in_flight:
                    break
            else:
                world.clock.advance(1.0)
            await asyncio.sleep(0.05)
        now = world.clock()
        assert lane.resting(now) and not engine.in_flight, (lane.failures, engine.in_flight)
        resting_until = lane.resting_until
        assert resting_until is not None
        # Every job's own backoff is over (8 s at most), the rest is not: none is tried.
        tried = len(sent_to(await sandbox.admin.requests(), failing))
        world.clock.advance(REST - 2.0)
        await asyncio.sleep(1.0)  # the engine polls twice a second
        assert len(sent_to(await sandbox.admin.requests(), failing)) == tried
        jobs = [job for job in await world.jobs() if job.id in set(failing_jobs)]
        assert {job.status for job in jobs} == {JobStatus.pending}
        early = [
            (job.id, job.next_attempt_at) for job in jobs if job.next_attempt_at < resting_until
        ]
        assert not early, (resting_until, early)

        await sandbox.admin.clear_faults()
        world.clock.advance(2.0)  # the rest is over: one job probes, then all go
        await until(world=world, done=failing_item)
    finally:
        await engine.stop()
    assert (lane.rests, lane.failures) == (0, 0)


async def test_the_engine_holds_a_bounded_number_of_a_stalled_hosts_jobs(
    lti_context: AppContext, sandbox: RunningSandbox
) -> None:
    world = await make_world(lti_context, sandbox, students=150)
    await sandbox.admin.set_throttle(enabled=False)
    stalled, healthy = sandbox.hosts[2], sandbox.hosts[3]
    stalled_item = await line_item_on(world, stalled, "Stalled")
    healthy_item = await line_item_on(world, healthy, "Healthy")
    # Every call to the stalled host hangs past the client's read timeout (1 s in tests).
    await sandbox.admin.set_faults(
        rules=[{"kind": "latency", "delay_ms": 5000, "host": stalled.netloc, "path": "^/api/"}]
    )
    await enqueue_for(world, stalled_item)
    await enqueue_for(world, healthy_item)
    engine = DeliveryEngine(lti_context, policy=quick_policy(concurrency=64))
    bound = int(engine.policy.lanes.initial_limit) * JOBS_PER_SLOT
    held: list[int] = []
    await engine.start()
    try:

        def count_held() -> None:
            lane = engine.lane(world.platform.id, job_origin(stalled_item))
            held.append(0 if lane is None else lane.jobs)

        await until(count_held, world=world, done=healthy_item)
        loop = asyncio.get_running_loop()
        calm_until = loop.time() + 3.0  # a few read timeouts more
        while loop.time() < calm_until:
            count_held()
            await asyncio.sleep(0.05)
    finally:
        await engine.stop(grace=0)

    assert max(held) <= bound, max(held)
    stalled_jobs = [job for job in await world.jobs() if job.lineitem_url == stalled_item]
    waiting_in_database = [job for job in stalled_jobs if job.status == JobStatus.pending]
    assert len(waiting_in_database) >= len(stalled_jobs) - bound
    lane = engine.lane(world.platform.id, job_origin(stalled_item))
    assert lane is not None and lane.limit < engine.policy.lanes.initial_limit


async def test_a_rest_deferral_asked_again_while_one_is_written_is_not_lost(
    context: AppContext,
) -> None:
    """A batch of results that commits while a rest's deferral runs asks for the deferral
    again (its rows were in flight in the UPDATE's snapshot); that second ask must stay queued
    even though it names the same end (it was dropped as done: a race CI found)."""
    engine = DeliveryEngine(context, policy=quick_policy())
    lane = ("platform", "https://canvas.example:443")
    until = context.clock() + timedelta(seconds=REST)
    engine._deferrals[lane] = until

    def ask_again(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE PASSBACK_JOBS"):
            engine._deferrals[lane] = until  # the writer, having committed meanwhile

    event.listen(context.engine.sync_engine, "before_cursor_execute", ask_again)
    try:
        await engine._defer_resting()
    finally:
        event.remove(context.engine.sync_engine, "before_cursor_execute", ask_again)
    assert engine._deferrals == {lane: until}
    await engine._defer_resting()
    assert engine._deferrals == {}
