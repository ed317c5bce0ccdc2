"""Workers sharing a database: no job twice, pairs in order, dead workers' jobs recovered."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from app.config import Settings
from app.context import AppContext
from app.delivery import DeliveryEngine, wake_workers
from app.store import claims
from app.store.db import transaction
from app.store.models import JobStatus, PassbackJob
from tests.lti.world import World, build_context, make_world, quick_policy
from tests.support.auth import KEY_ENCRYPTION_KEY
from tests.support.sandbox import RunningSandbox

SCORES = r"/scores$"
REPO = Path(__file__).resolve().parents[2]


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 15.0) -> None:
    """Wait for a condition the system reaches on its own (not a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the condition was not reached")
        await asyncio.sleep(0.02)


@pytest.fixture
async def second_context(
    lti_settings: Settings, sandbox: RunningSandbox
) -> AsyncIterator[AppContext]:
    """Another instance on the same database: its own pool, token cache and engine."""
    context = build_context(lti_settings, sandbox.clock)
    await context.load_tool_keys()
    try:
        yield context
    finally:
        await context.close()


async def test_two_engines_never_deliver_the_same_job(
    lti_context: AppContext, second_context: AppContext, sandbox: RunningSandbox
) -> None:
    await sandbox.admin.set_throttle(enabled=False)
    await sandbox.admin.set_faults(latency_ms=20)
    world = await make_world(lti_context, sandbox, students=120)
    job_ids = await world.enqueue_many(world.students)
    first = DeliveryEngine(lti_context, policy=quick_policy(concurrency=8))
    second = DeliveryEngine(second_context, policy=quick_policy(concurrency=8))

    await asyncio.gather(first.drain(), second.drain())
    await world.settle(first)

    assert first.stats.delivered > 0 and second.stats.delivered > 0
    assert first.stats.delivered + second.stats.delivered == len(job_ids)
    posts = Counter(
        json.loads(post["request_body"])["userId"] for post in await world.score_posts()
    )
    assert set(posts.values()) == {1}
    assert len(posts) == 120
    for job_id in job_ids:
        assert [a.outcome for a in await world.attempts(job_id)] == ["delivered"]


async def test_a_newer_grade_waits_for_the_one_in_flight_on_any_worker(
    lti_context: AppContext, second_context: AppContext, sandbox: RunningSandbox
) -> None:
    await sandbox.admin.set_throttle(enabled=False)
    world = await make_world(lti_context, sandbox)
    student = world.students[0]
    await sandbox.admin.add_fault("latency", path=SCORES, method="POST", delay_ms=400)
    engines = [
        DeliveryEngine(lti_context, policy=quick_policy()),
        DeliveryEngine(second_context, policy=quick_policy()),
    ]
    for engine in engines:
        await engine.start()
    try:
        older = await world.enqueue(student, score=3)

        async def older_in_flight() -> bool:
            return (await world.job(older)).status == JobStatus.in_flight

        await eventually(older_in_flight)
        newer = await world.enqueue(student, score=9, timestamp=world.clock())
        wake_workers(second_context)

        async def both_done() -> bool:
            jobs = [await world.job(older), await world.job(newer)]
            return all(job.status == JobStatus.delivered for job in jobs)

        await eventually(both_done)
    finally:
        for engine in engines:
            await engine.stop()
    [first_post] = await world.attempts(older)
    [second_post] = await world.attempts(newer)
    assert first_post.finished_at <= second_post.started_at
    assert (await world.cell(student))["score"] == "9"


async def claim_as(world: World, owner: str) -> list[PassbackJob]:
    """Lease the world's due jobs to `owner` (a worker that will not deliver them)."""
    async with transaction(world.context.sessions) as session:
        claimed = await claims.claim_jobs(
            session,
            platform_id=world.platform.id,
            owner=owner,
            now=world.clock(),
            lease=timedelta(seconds=60),
            limit=10,
        )
    return claimed.jobs


async def test_an_older_grade_still_waiting_is_superseded_by_a_newer_one(
    world: World, engine: DeliveryEngine
) -> None:
    student = world.students[0]
    world.clock.freeze()  # the retry is due only when the test moves the clock
    await world.sandbox.admin.add_fault("error", path=SCORES, method="POST", remaining=1)
    older = await world.enqueue(student, score=3)
    await engine.drain()  # fails once, waits for its retry
    newer = await world.enqueue(student, score=9)
    await world.settle(engine)
    job = await world.job(older)
    assert (job.status, job.superseded_by) == (JobStatus.superseded, newer)
    assert (await world.job(newer)).status == JobStatus.delivered
    assert (await world.cell(student))["score"] == "9"
    assert len(await world.attempts(older)) == 1


async def test_a_claim_supersedes_every_older_pending_grade_of_a_pair_left_by_a_race(
    world: World,
) -> None:
    """Three grades of one pair pending at once (two sends committed together, each missing
    the other's job): the claim takes the eldest, finds the newest pending, supersedes the
    older two and claims the newest instead; only it is sent."""
    student = world.students[0]
    queued = [await world.enqueue(student, score=score) for score in (3, 5, 9)]
    async with transaction(world.context.sessions) as session:
        await session.execute(
            update(PassbackJob)
            .where(PassbackJob.id.in_(queued))
            .values(status=JobStatus.pending, superseded_by=None, outcome_code=None)
        )
    assert [job.id for job in await claim_as(world, "worker")] == [queued[-1]]
    for older in queued[:-1]:
        job = await world.job(older)
        assert (job.status, job.superseded_by, job.lease_owner) == (
            JobStatus.superseded,
            queued[-1],
            None,
        )


async def test_a_job_leased_by_a_dead_worker_is_delivered_by_another(
    world: World, engine: DeliveryEngine
) -> None:
    job_id = await world.enqueue(world.students[0])
    [claimed] = await claim_as(world, "worker-that-dies")
    assert claimed.id == job_id

    await engine.drain()
    assert (await world.job(job_id)).status == JobStatus.in_flight  # the lease still holds

    world.clock.advance(61)
    await engine.drain()
    job = await world.job(job_id)
    assert job.status == JobStatus.delivered
    # The dead worker may have posted: the student's result says it had not, so the grade
    # goes with its submission.
    outcomes = [a.outcome for a in await world.attempts(job_id)]
    assert outcomes == ["lease_expired", "submission_absent", "delivered"]
    cell = await world.cell(world.students[0])
    assert (cell["score"], cell["attempt"], cell["submission_type"]) == (
        "7",
        1,
        "basic_lti_launch",
    )


async def test_a_grade_whose_lease_ran_out_after_a_newer_one_was_queued_is_not_sent_again(
    world: World, engine: DeliveryEngine
) -> None:
    student = world.students[0]
    older = await world.enqueue(student, score=3)
    await claim_as(world, "worker-that-dies")
    newer = await world.enqueue(student, score=9, timestamp=world.clock())
    assert (await world.job(older)).status == JobStatus.in_flight, "enqueueing leaves it"

    world.clock.advance(61)  # the older job goes back to pending beside the newer one
    await world.settle(engine)

    job = await world.job(older)
    assert (job.status, job.superseded_by) == (JobStatus.superseded, newer)
    assert [a.outcome for a in await world.attempts(older)] == ["lease_expired"]
    assert (await world.job(newer)).status == JobStatus.delivered
    assert (await world.cell(student))["score"] == "9"


def worker_environment(settings: Settings) -> dict[str, str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("PASSBACK_")
    }
    environment.update(
        PASSBACK_DATABASE_URL=settings.database_url,
        PASSBACK_VAR_DIR=str(settings.var_dir),
        PASSBACK_TOOL_KEY_DIR=str(settings.keys_dir),
        PASSBACK_KEY_ENCRYPTION_KEY=KEY_ENCRYPTION_KEY,
        PASSBACK_INSECURE_HOSTS="127.0.0.1,localhost",
        PASSBACK_LEASE_SECONDS="30",
        PASSBACK_WORKER_POLL_INTERVAL="0.05",
        PASSBACK_HTTP_READ_TIMEOUT="60",
        PASSBACK_LOG_JSON="false",
    )
    return environment


async def test_a_killed_worker_process_leaves_its_job_to_another_worker(
    world: World, engine: DeliveryEngine, lti_settings: Settings
) -> None:
    admin = world.sandbox.admin
    # The worker's score post hangs inside Canvas; the worker is killed meanwhile.
    await admin.add_fault("latency", path=SCORES, method="POST", remaining=1, delay_ms=20_000)
    job_id = await world.enqueue(world.students[0])
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        cwd=REPO,
        env=worker_environment(lti_settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        async def posting() -> bool:
            faults: dict[str, Any] = await admin.call("GET", "/faults")
            return not faults["rules"]  # the hanging post has taken the fault

        await eventually(posting, within=30)
        job = await world.job(job_id)
        assert job.status == JobStatus.in_flight and job.lease_owner
    finally:
        worker.send_signal(signal.SIGKILL)
        await asyncio.to_thread(worker.wait, 10)

    await engine.drain()
    assert (await world.job(job_id)).status == JobStatus.in_flight  # until the lease runs out
    world.clock.advance(31)
    await engine.drain()
    job = await world.job(job_id)
    assert job.status == JobStatus.delivered
    assert [a.outcome for a in await world.attempts(job_id)] == [
        "lease_expired",
        "submission_absent",  # the killed worker's post is still held up inside Canvas
        "delivered",
    ]
    assert (await world.cell(world.students[0]))["score"] == "7"


async def test_stopping_lets_running_deliveries_finish(world: World) -> None:
    await world.sandbox.admin.add_fault("latency", path=SCORES, method="POST", delay_ms=300)
    engine = DeliveryEngine(world.context, policy=quick_policy())
    await engine.start()
    job_id = await world.enqueue(world.students[0])

    async def in_flight() -> bool:
        return engine.in_flight > 0

    await eventually(in_flight)
    await engine.stop(grace=10)
    assert (await world.job(job_id)).status == JobStatus.delivered


async def test_stopping_releases_what_cannot_finish_in_time(world: World) -> None:
    await world.sandbox.admin.add_fault(
        "latency", path=SCORES, method="POST", remaining=1, delay_ms=800
    )
    engine = DeliveryEngine(world.context, policy=quick_policy())
    await engine.start()
    job_id = await world.enqueue(world.students[0])

    async def posting() -> bool:
        faults: dict[str, Any] = await world.sandbox.admin.call("GET", "/faults")
        return not faults["rules"]

    await eventually(posting)
    await engine.stop(grace=0)
    job = await world.job(job_id)
    assert (job.status, job.outcome_code, job.lease_owner) == (JobStatus.pending, "released", None)
    assert job.maybe_delivered  # stopped mid-post: the resend opens no new submission

    await DeliveryEngine(world.context, policy=quick_policy()).drain()
    assert (await world.job(job_id)).status == JobStatus.delivered
    assert (await world.cell(world.students[0]))["score"] == "7"


async def test_a_running_worker_starts_when_a_job_is_enqueued(world: World) -> None:
    engine = DeliveryEngine(world.context, policy=quick_policy(poll_interval=3600))
    await engine.start()
    try:
        await asyncio.sleep(0.1)  # the engine has looked once and found nothing
        job_id = await world.enqueue(world.students[0])  # rings the doorbell

        async def delivered() -> bool:
            return (await world.job(job_id)).status == JobStatus.delivered

        await eventually(delivered, within=10)
    finally:
        await engine.stop()


async def test_a_burst_for_one_canvas_does_not_hold_up_another(
    lti_context: AppContext, sandbox: RunningSandbox
) -> None:
    await sandbox.admin.set_throttle(enabled=False)
    await sandbox.admin.add_fault("latency", path=SCORES, method="POST", delay_ms=100)
    busy = await make_world(lti_context, sandbox, students=150)
    quiet = await make_world(lti_context, sandbox, students=3)
    await busy.enqueue_many(busy.students)
    quiet_jobs = await quiet.enqueue_many(quiet.students)
    engine = DeliveryEngine(lti_context, policy=quick_policy(concurrency=16))
    await engine.start()
    try:

        async def quiet_done() -> bool:
            jobs = [await quiet.job(job_id) for job_id in quiet_jobs]
            return all(job.status == JobStatus.delivered for job in jobs)

        await eventually(quiet_done, within=30)
        waiting = [job for job in await busy.jobs() if job.status == JobStatus.pending]
        assert len(waiting) > 50  # the quiet Canvas did not wait for the burst to drain
    finally:
        await engine.stop(grace=0)


async def test_throttling_shrinks_the_lane_and_every_grade_still_arrives(
    lti_context: AppContext, sandbox: RunningSandbox
) -> None:
    world = await make_world(lti_context, sandbox, students=20)
    # Another tool of the same developer key has filled the bucket: Canvas refuses for a while.
    await sandbox.admin.fill_bucket(sandbox.bucket_key(world.client_id), 650)
    engine = DeliveryEngine(lti_context, policy=quick_policy())
    await world.enqueue_many(world.students)
    await engine.drain()
    lane = engine.lane(world.platform.id)
    assert lane is not None and lane.group.limit < engine.policy.lanes.initial_limit
    assert engine.stats.throttled > 0
    await world.settle(engine, rounds=300)
    assert {job.status for job in await world.jobs()} == {JobStatus.delivered}
    for student in world.students:
        assert (await world.cell(student))["score"] == "7"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_worker_only_process_serves_metrics_and_health(
    world: World, lti_settings: Settings
) -> None:
    port = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--metrics-port", str(port)],
        cwd=REPO,
        env=worker_environment(lti_settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:

            async def healthy() -> bool:
                if worker.poll() is not None:
                    raise AssertionError(worker.stderr.read() if worker.stderr else b"")
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(healthy, within=30)
            health = (await http.get("/healthz")).json()
            assert (health["status"], health["database"]) == ("ok", "ok")

            job_id = await world.enqueue(world.students[0])

            async def delivered() -> bool:
                return (await world.job(job_id)).status == JobStatus.delivered

            await eventually(delivered, within=30)
            metrics = await http.get("/metrics")
            assert metrics.status_code == 200
            assert metrics.headers["content-type"].startswith("text/plain")
            text = metrics.text
            assert 'passback_jobs_finished_total{code="delivered",status="delivered"} 1.0' in text
            assert 'passback_jobs{status="delivered"} 1.0' in text
            assert "passback_platform_responses_total" in text
            # Nothing else is served: no API, no docs.
            assert (await http.get("/v1/jobs")).status_code == 404
            assert (await http.get("/docs")).status_code == 404
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 20) == 0
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
            await asyncio.to_thread(worker.wait, 10)
