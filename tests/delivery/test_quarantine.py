"""A job row the service cannot read back is set aside; it never stops the others."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import text

from app.delivery import DeliveryEngine
from app.store.models import JobStatus
from tests.lti.world import World
from tests.support.poison import write_unreadable_time


async def test_an_unreadable_job_is_quarantined_and_the_others_are_delivered(
    world: World, engine: DeliveryEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="passback.delivery")
    first, poisoned, last = await world.enqueue_many(world.students)
    await write_unreadable_time(world.context.engine, poisoned, "submitted_at")

    await engine.drain()

    assert (await world.job(first)).status == JobStatus.delivered
    assert (await world.job(last)).status == JobStatus.delivered
    [attempt] = await world.attempts(poisoned)
    assert attempt.outcome == "unreadable_row"
    assert engine.stats.quarantined == 1
    metric = world.context.metrics.registry.get_sample_value("passback_jobs_quarantined_total")
    assert metric == 1
    lines = [record for record in caplog.records if "quarantined" in record.getMessage()]
    assert len(lines) == 1
    assert str(poisoned) in lines[0].getMessage()


async def test_a_quarantined_job_is_never_claimed_again(
    world: World, engine: DeliveryEngine
) -> None:
    [poisoned] = await world.enqueue_many(world.students[:1])
    await write_unreadable_time(world.context.engine, poisoned, "score_timestamp")
    await engine.drain()
    world.clock.advance(3600)
    await engine.drain()

    assert engine.stats.quarantined == 1
    assert len(await world.attempts(poisoned)) == 1
    async with world.context.engine.connect() as connection:
        status = await connection.scalar(
            text("SELECT status FROM passback_jobs WHERE id = :id"), {"id": poisoned}
        )
    assert status == JobStatus.quarantined


async def test_an_unforeseen_error_is_a_crashed_attempt_with_backoff_and_one_traceback(
    world: World, engine: DeliveryEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="passback.delivery")
    world.clock.freeze()  # the retries are due only when the test moves the clock
    *broken, healthy = await world.enqueue_many(world.students)
    async with world.context.engine.begin() as connection:  # a mode no release ever wrote
        await connection.execute(
            text("UPDATE passback_jobs SET mode = 'weird' WHERE id IN (:a, :b)"),
            {"a": broken[0], "b": broken[1]},
        )
    await engine.drain()
    world.clock.advance(60)
    await engine.drain()

    assert (await world.job(healthy)).status == JobStatus.delivered
    for job_id in broken:
        job = await world.job(job_id)
        assert (job.status, job.outcome_code) == (JobStatus.pending, "crashed")
        assert job.next_attempt_at > world.clock()
        assert [attempt.outcome for attempt in await world.attempts(job_id)] == ["crashed"] * 2
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert len(tracebacks) == 1
