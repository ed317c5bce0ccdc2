"""The service runs its delivery workers in its lifespan (`passback serve`) when configured."""

from __future__ import annotations

import asyncio

from app.config import Settings
from app.delivery import wake_workers
from app.main import create_app
from app.store.models import JobStatus
from tests.lti.world import World


async def test_the_api_process_delivers_jobs_when_workers_are_on(
    world: World, lti_settings: Settings
) -> None:
    settings = lti_settings.model_copy(update={"run_workers": True, "worker_poll_interval": 0.05})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        job_id = await world.enqueue(world.students[0])
        wake_workers(app.state.context)
        for _ in range(500):
            if (await world.job(job_id)).status == JobStatus.delivered:
                break
            await asyncio.sleep(0.02)
    assert (await world.job(job_id)).status == JobStatus.delivered
    assert (await world.cell(world.students[0]))["score"] == "7"
