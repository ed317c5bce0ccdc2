"""Two instances, one PostgreSQL: they share the queue and never deliver a grade twice.

Two `passback serve` processes run against the same database, each with its workers.
Formative spreads its reports over both (as a load balancer would). Both instances deliver,
each grade reaches Canvas exactly once (one score post, one attempt row, one Canvas
submission attempt per student), and their counters add up to the jobs there were.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.sandbox import SandboxConfig
from app.sandbox.config import ThrottleSettings
from app.sandbox.fault_rules import FaultSettings
from tests.reliability.database import attempts_per_job, jobs_by_status
from tests.reliability.figures import Figures
from tests.reliability.remote import EVENTS, bounded, launch_all, seed_class
from tests.support.processes import service_env, start_service
from tests.support.sandbox import run_sandbox

STUDENTS = 600
SETTLE_SECONDS = 60.0


def delivered_by(metrics_text: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "passback_jobs_finished":
            return sum(
                sample.value
                for sample in family.samples
                if sample.name == "passback_jobs_finished_total"
                and sample.labels.get("status") == "delivered"
            )
    return 0.0


@pytest.mark.timeout(180)
async def test_two_instances_share_the_queue_without_delivering_twice(
    postgres_url: str, tmp_path: Path, tool_keys_dir: Path, figures: Figures
) -> None:
    config = SandboxConfig(
        throttle=ThrottleSettings(enabled=False),
        faults=FaultSettings(latency_ms=30),
        request_log_limit=4 * STUDENTS,
    )
    async with run_sandbox(config) as sandbox:
        env = service_env(postgres_url, var_dir=tmp_path, keys_dir=tool_keys_dir)
        first = await start_service(env, log_path=tmp_path / "first.log")
        second = await start_service(env, log_path=tmp_path / "second.log")
        try:
            async with (
                httpx.AsyncClient(base_url=first.base_url, timeout=30) as api_first,
                httpx.AsyncClient(base_url=second.base_url, timeout=30) as api_second,
            ):
                room = await seed_class(api_first, sandbox, tool_keys_dir, students=STUDENTS)
                await launch_all(api_second, room, concurrency=16)
                apis = (api_first, api_second)

                async def report(number: int) -> None:
                    learner = room.learners[number]
                    response = await apis[number % 2].post(
                        "/v1/submission-events", json=room.submitted_event(learner), headers=EVENTS
                    )
                    assert response.status_code == 202, response.text

                await bounded(range(STUDENTS), report, concurrency=16)
                deadline = time.monotonic() + SETTLE_SECONDS
                while await jobs_by_status(postgres_url) != {"delivered": STUDENTS}:
                    assert time.monotonic() < deadline, await jobs_by_status(postgres_url)
                    await asyncio.sleep(0.2)
                by_instance = [
                    delivered_by((await api.get("/metrics")).text)
                    for api in (api_first, api_second)
                ]
                gradebook = await room.gradebook()
                posts = await sandbox.admin.requests(path_contains="/scores", method="POST")
                grants = await sandbox.admin.token_grants(room.client_id)
        finally:
            await first.terminate()
            await second.terminate()

    assert await jobs_by_status(postgres_url) == {"delivered": STUDENTS}
    tries = await attempts_per_job(postgres_url)
    assert tries == {1: STUDENTS}, tries
    posts_per_student = Counter(json.loads(post["request_body"])["userId"] for post in posts)
    assert len(posts_per_student) == STUDENTS
    assert set(posts_per_student.values()) == {1}
    cells = [gradebook[learner.user_id] for learner in room.learners]
    assert {cell["attempt"] for cell in cells} == {1}
    for cell, learner in zip(cells, room.learners, strict=True):
        assert Decimal(cell["score"]) == learner.score
    assert min(by_instance) > 0, by_instance
    assert sum(by_instance) == STUDENTS
    assert grants == 2  # one token per instance, shared by all its deliveries
    figures.record("delivered_by_each_instance", [int(n) for n in by_instance])
    figures.record("score_posts", len(posts))
    figures.record("token_grants", grants)
