"""kill -9 in the middle of delivery, twice: every grade still lands, once, exactly.

The service runs as a real process on PostgreSQL with the sandbox Canvas. Formative reports
launches, then a couple of thousand eligible submissions, resending whatever was not
acknowledged (same body, same event_id) while the service is down. The service is killed with
SIGKILL while deliveries are in flight (no shutdown hook runs: leases are left held, answers
are lost), restarted, killed again, restarted. Then every grade in the Canvas gradebook must be
the expected one, every job delivered (none lost, none stuck), and every student must have
exactly one submission attempt in Canvas (not two, and not a grade without a submission).
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

from app.sandbox import SandboxConfig
from app.sandbox.config import ThrottleSettings
from app.sandbox.fault_rules import FaultSettings
from tests.reliability.database import attempt_outcomes, event_decisions, jobs_by_status
from tests.reliability.figures import Figures
from tests.reliability.remote import (
    EVENTS,
    Learner,
    RemoteClass,
    bounded,
    launch_all,
    post_until_answered,
    seed_class,
)
from tests.support.processes import ServiceProcess, service_env, start_service
from tests.support.sandbox import RunningSandbox, run_sandbox

STUDENTS = 2000
KILL_AT = (0.2, 0.55)
"""Kill when this share of the grades has reached Canvas."""
LEASE_SECONDS = 3
"""A killed instance's jobs are handed back this soon (production: 120 s)."""
AGS_LATENCY_MS = 25
SETTLE_SECONDS = 90.0


def graded_in_canvas(sandbox: RunningSandbox, assignment_id: str) -> int:
    with sandbox.state.lock:
        return sum(
            1
            for (assignment, _user), submission in sandbox.state.submissions.items()
            if assignment == assignment_id and submission.score is not None
        )


class Formative:
    """Formative's backend: reports every submission until the service acknowledges it."""

    def __init__(self, api: httpx.AsyncClient, room: RemoteClass) -> None:
        self.api = api
        self.room = room
        self.acknowledged: dict[str, int] = {}
        self.bodies = {
            learner.student_id: room.submitted_event(learner) for learner in room.learners
        }

    async def report(self, learner: Learner) -> None:
        body = self.bodies[learner.student_id]
        response = await post_until_answered(
            self.api, "/v1/submission-events", body, headers=EVENTS, give_up_after=120
        )
        assert response.status_code in (200, 202), response.text
        assert response.json()["decision"] == "queued", response.text
        self.acknowledged[body["event_id"]] = response.status_code


async def kill_when(
    service: ServiceProcess, sandbox: RunningSandbox, room: RemoteClass, share: float
) -> tuple[ServiceProcess, int]:
    """SIGKILL once `share` of the grades are in Canvas; restart; return the new process."""
    while graded_in_canvas(sandbox, room.assignment_id) < share * len(room.learners):
        if not service.running:
            raise AssertionError("the service died on its own")
        await asyncio.sleep(0.01)
    graded = graded_in_canvas(sandbox, room.assignment_id)
    service.kill()
    return await service.restarted(), graded


@pytest.mark.timeout(240)
async def test_killing_the_service_mid_delivery_twice_loses_and_duplicates_nothing(
    postgres_url: str, tmp_path: Path, tool_keys_dir: Path, figures: Figures
) -> None:
    started = time.monotonic()
    config = SandboxConfig(
        throttle=ThrottleSettings(enabled=False),
        faults=FaultSettings(latency_ms=AGS_LATENCY_MS),
        request_log_limit=4 * STUDENTS + 1000,
    )
    async with run_sandbox(config) as sandbox:
        env = service_env(
            postgres_url, var_dir=tmp_path, keys_dir=tool_keys_dir, lease_seconds=LEASE_SECONDS
        )
        service = await start_service(env, log_path=tmp_path / "service.log")
        try:
            async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as api:
                room = await seed_class(api, sandbox, tool_keys_dir, students=STUDENTS)
                await launch_all(api, room, concurrency=16)
                launched_at = time.monotonic()
                formative = Formative(api, room)
                reporting = asyncio.create_task(
                    bounded(room.learners, formative.report, concurrency=16)
                )
                killed_at: list[int] = []
                for share in KILL_AT:
                    service, graded = await kill_when(service, sandbox, room, share)
                    killed_at.append(graded)
                await reporting
                reported_at = time.monotonic()
                deadline = time.monotonic() + SETTLE_SECONDS
                while graded_in_canvas(sandbox, room.assignment_id) < STUDENTS:
                    assert time.monotonic() < deadline, "grades still missing"
                    await asyncio.sleep(0.1)
                # Let the last results be written, then look at the database.
                while await jobs_by_status(postgres_url, room.formative_id) != {
                    "delivered": STUDENTS
                }:
                    assert time.monotonic() < deadline, "jobs not all delivered"
                    await asyncio.sleep(0.2)
                settled_at = time.monotonic()
                gradebook = await room.gradebook()
                posts = await sandbox.admin.requests(path_contains="/scores", method="POST")
        finally:
            await service.terminate()

    decisions = await event_decisions(postgres_url, room.formative_id)
    assert set(formative.acknowledged) <= set(decisions)
    assert Counter(decisions.values()) == {"queued": STUDENTS}
    assert await jobs_by_status(postgres_url, room.formative_id) == {"delivered": STUDENTS}

    wrong = [
        (learner, gradebook[learner.user_id]["score"])
        for learner in room.learners
        if gradebook[learner.user_id]["score"] is None
        or Decimal(gradebook[learner.user_id]["score"]) != learner.score
    ]
    assert not wrong, wrong[:5]
    # Exactly one Canvas attempt each: never a second, and never a grade without its
    # submission (a resend after an unknown outcome reads the student's result first).
    attempts = Counter(gradebook[learner.user_id]["attempt"] for learner in room.learners)
    assert attempts == {1: STUDENTS}, attempts

    # A post cut off by the kill may have reached the sandbox without its body.
    posts_per_student = Counter(
        json.loads(post["request_body"])["userId"] for post in posts if post["request_body"]
    )
    figures.record("events_acknowledged", len(formative.acknowledged))
    figures.record("acknowledged_as_repeat_200", Counter(formative.acknowledged.values())[200])
    figures.record("grades_correct_in_gradebook", STUDENTS - len(wrong))
    figures.record("grades_in_canvas_when_killed", killed_at)
    figures.record("canvas_attempts_per_student", dict(sorted(attempts.items())))
    figures.record("score_posts_total", len(posts))
    figures.record(
        "students_posted_more_than_once", sum(1 for n in posts_per_student.values() if n > 1)
    )
    figures.record("job_attempt_outcomes", await attempt_outcomes(postgres_url))
    figures.record(
        "seconds_launches_reports_settle_total",
        [
            round(launched_at - started, 1),
            round(reported_at - launched_at, 1),
            round(settled_at - reported_at, 1),
            round(time.monotonic() - started, 1),
        ],
    )
