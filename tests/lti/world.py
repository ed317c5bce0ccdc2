"""A sandbox Canvas with our tool installed, and the service's side of it.

`lti_context` is an instance context whose clock is the sandbox's `TestClock` (moving one moves
both) and whose quick in-call retries are short. `world` seeds a course, a 10-point assignment
and students in the sandbox, trusting the service's current tool key, and registers the
platform in the service's database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.config import Settings
from app.context import AppContext
from app.delivery import DeliveryEngine, DeliveryPolicy, LanePolicy
from app.lti.ags import AgsClient
from app.lti.tokens import RequestRetry, TokenCache
from app.lti.urls import host_of
from app.store import claims
from app.store.db import transaction
from app.store.jobs import NewJob, enqueue_job
from app.store.models import JobAttempt, JobKind, PassbackJob, Platform
from tests.conftest import make_settings
from tests.support import databases
from tests.support.sandbox import RunningSandbox, TestClock

QUICK_RETRY = RequestRetry(attempts=3, first_wait=0.01, max_wait=0.05)
RESPONSE_URL = "https://formative.example/r/{student}"


def quick_policy(**overrides: Any) -> DeliveryPolicy:
    """Small, fast numbers: tests move the clock instead of waiting."""
    values: dict[str, Any] = {
        "concurrency": 32,
        "poll_interval": 0.05,
        "lease": timedelta(seconds=60),
        "backoff_first": 1.0,
        "backoff_max": 8.0,
        "throttle_backoff_first": 0.5,
        "throttle_backoff_max": 2.0,
        "shutdown_grace": 2.0,
        "platform_refresh": 0.0,
        "database_retry_first": 0.05,
        "database_retry_max": 1.0,
        # Throttling pauses a lane for real seconds, a resting host for clock seconds: short.
        "lanes": LanePolicy(throttle_pause_max=2.0, rest_first=1.0, rest_max=8.0),
    }
    values.update(overrides)
    return DeliveryPolicy(**values)


def build_context(settings: Settings, clock: TestClock) -> AppContext:
    context = AppContext.build(settings, clock=clock)
    context.tokens = TokenCache(
        context.http,
        context.keyring,
        insecure_hosts=settings.insecure_hosts,
        clock=clock,
        retry=QUICK_RETRY,
    )
    context.ags = AgsClient(
        context.ags_http,
        context.tokens,
        insecure_hosts=settings.insecure_hosts,
        clock=clock,
        retry=QUICK_RETRY,
    )
    return context


@pytest.fixture
def lti_settings(database_url: str, tmp_path: Path, tool_keys_dir: Path) -> Settings:
    return make_settings(database_url, tmp_path, tool_keys_dir, http_read_timeout=1.0)


@pytest.fixture
async def lti_context(lti_settings: Settings, sandbox: RunningSandbox) -> AsyncIterator[AppContext]:
    context = build_context(lti_settings, sandbox.clock)
    await databases.empty_all_tables(context.engine)
    await context.load_tool_keys()
    try:
        yield context
    finally:
        await context.close()


@dataclass
class World:
    sandbox: RunningSandbox
    context: AppContext
    platform: Platform
    client_id: str
    course_id: str
    assignment_id: str
    line_item_url: str
    students: list[str]
    """LTI user ids."""
    seeded: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def clock(self) -> TestClock:
        return self.sandbox.clock

    async def enqueue(
        self,
        student: str,
        score: Decimal | int | str = 7,
        max_score: Decimal | int | str = 10,
        *,
        kind: JobKind = JobKind.manual,
        timestamp: datetime | None = None,
        submitted_at: datetime | None = None,
        line_item_url: str | None = None,
        comment: str | None = None,
        deadline: timedelta = timedelta(hours=24),
    ) -> int:
        now = self.clock()
        job = NewJob(
            kind=kind,
            platform_id=self.platform.id,
            formative_id="fm-42",
            student_id=f"s-{student}",
            class_id="c-3",
            lineitem_url=line_item_url or self.line_item_url,
            lti_user_id=student,
            score_timestamp=timestamp or now,
            score=Decimal(str(score)),
            max_score=Decimal(str(max_score)),
            submitted_at=submitted_at or now - timedelta(minutes=1),
            response_url=RESPONSE_URL.format(student=student),
            comment=comment,
        )
        async with transaction(self.context.sessions) as session:
            queued = await enqueue_job(session, job, now=now, deadline=deadline)
        self.context.wakeup.notify()
        return queued.id

    async def enqueue_many(self, students: Sequence[str], **fields: Any) -> list[int]:
        return [await self.enqueue(student, **fields) for student in students]

    async def job(self, job_id: int) -> PassbackJob:
        async with self.context.sessions() as session:
            job = await session.get(PassbackJob, job_id)
            assert job is not None
            return job

    async def jobs(self) -> list[PassbackJob]:
        async with self.context.sessions() as session:
            return list(await session.scalars(select(PassbackJob).order_by(PassbackJob.id)))

    async def attempts(self, job_id: int) -> list[JobAttempt]:
        async with self.context.sessions() as session:
            query = select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.id)
            return list(await session.scalars(query))

    async def cell(self, student: str, assignment_id: str | None = None) -> dict[str, Any]:
        """The gradebook cell a teacher sees in Canvas."""
        return await self.sandbox.admin.submission(assignment_id or self.assignment_id, student)

    async def score_posts(self) -> list[dict[str, Any]]:
        return await self.sandbox.admin.requests(path_contains="/scores", method="POST")

    async def settle(self, engine: DeliveryEngine, *, rounds: int = 50) -> None:
        """Deliver until nothing is pending, moving the clock to each retry time."""
        for _ in range(rounds):
            await engine.drain()
            async with self.context.sessions() as session:
                due = await claims.next_pending_at(session)
            if due is None:
                return
            wait = (due - self.clock()).total_seconds()
            if wait > 0:
                self.clock.advance(wait + 0.001)
        raise AssertionError("jobs still pending after many rounds")


async def register_scenario(
    context: AppContext,
    seeded: Mapping[str, Any],
    base_url: str,
    *,
    label: str = "sandbox",
    also: Sequence[str] = (),
) -> Platform:
    """Register the platform of a sandbox scenario (the admin API's answer) in the service;
    `also`: the base URLs of the sandbox's other Canvas hosts, allowed as well."""
    now = context.clock()
    platform = Platform(
        issuer=seeded["issuer"],
        client_id=seeded["client_id"],
        deployment_ids=[seeded["deployment_id"]],
        token_url=seeded["token_url"],
        jwks_url=seeded["jwks_url"],
        allowed_hosts=list(dict.fromkeys(host_of(url) for url in (base_url, *also))),
        label=label,
        created_at=now,
        updated_at=now,
    )
    async with transaction(context.sessions) as session:
        session.add(platform)
    return platform


async def make_world(
    context: AppContext,
    sandbox: RunningSandbox,
    *,
    points: int | str = 10,
    students: int = 3,
    **scenario: Any,
) -> World:
    seeded = await sandbox.admin.scenario(
        tool_jwk=context.keyring.current.public_jwk(),
        points=str(points),
        students=students,
        **scenario,
    )
    platform = await register_scenario(
        context, seeded, sandbox.base_url, also=[host.base_url for host in sandbox.hosts]
    )
    return World(
        sandbox=sandbox,
        context=context,
        platform=platform,
        client_id=seeded["client_id"],
        course_id=seeded["course_id"],
        assignment_id=seeded["assignment_id"],
        line_item_url=seeded["line_item_url"],
        students=[student["lti_id"] for student in seeded["students"]],
        seeded=seeded,
    )


@pytest.fixture
async def world(lti_context: AppContext, sandbox: RunningSandbox) -> World:
    """Three students in a 10-point assignment; the sandbox's throttle is switched off (the
    throttle has its own tests)."""
    await sandbox.admin.set_throttle(enabled=False)
    return await make_world(lti_context, sandbox)


@pytest.fixture
async def engine(lti_context: AppContext) -> AsyncIterator[DeliveryEngine]:
    engine = DeliveryEngine(lti_context, policy=quick_policy())
    yield engine
    await engine.stop()
