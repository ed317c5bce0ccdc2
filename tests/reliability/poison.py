"""Bad platforms beside a good one: registering garbage platforms, queueing their jobs, and
watching what the delivery engine logs per job."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import func, select

from app.context import AppContext
from app.logs import job_id_var
from app.store.db import transaction
from app.store.jobs import NewJob, enqueue_job
from app.store.models import JobAttempt, JobKind, PassbackJob, Platform
from tests.support.garbage_platform import GarbagePlatform


@dataclass
class BadPlatform:
    server: GarbagePlatform
    platform: Platform
    base_url: str
    job_ids: list[int] = field(default_factory=list)


@asynccontextmanager
async def bad_platforms(
    context: AppContext, kinds: list[str], *, in_process: bool = True
) -> AsyncIterator[list[BadPlatform]]:
    """One registered platform per garbage kind, served on loopback (by this process, or by
    one of its own each)."""
    async with AsyncExitStack() as stack:
        platforms = []
        for kind in kinds:
            server = GarbagePlatform(kind)
            base_url = await stack.enter_async_context(server.running(in_process=in_process))
            platform = await _register(context, kind, base_url)
            platforms.append(BadPlatform(server, platform, base_url))
        yield platforms


async def _register(context: AppContext, kind: str, base_url: str) -> Platform:
    now = context.clock()
    platform = Platform(
        issuer=f"{base_url}/{kind}",
        client_id=f"client-{kind}",
        deployment_ids=["1"],
        token_url=f"{base_url}/token",
        jwks_url=f"{base_url}/jwks",
        allowed_hosts=["127.0.0.1"],
        label=kind,
        created_at=now,
        updated_at=now,
    )
    async with transaction(context.sessions) as session:
        session.add(platform)
    return platform


async def enqueue_bad(context: AppContext, bad: BadPlatform, jobs: int) -> None:
    now = context.clock()
    async with transaction(context.sessions) as session:
        for number in range(jobs):
            job = NewJob(
                kind=JobKind.manual,
                platform_id=bad.platform.id,
                formative_id="fm-bad",
                student_id=f"s-{number}",
                class_id="c-bad",
                lineitem_url=f"{bad.base_url}/lineitems/{number}",
                lti_user_id=f"u-{number}",
                score_timestamp=now,
                score=Decimal(7),
                max_score=Decimal(10),
                submitted_at=now - timedelta(minutes=1),
            )
            bad.job_ids.append(
                (await enqueue_job(session, job, now=now, deadline=timedelta(hours=24))).id
            )
    context.wakeup.notify()


async def attempts_by_job(context: AppContext, job_ids: list[int]) -> dict[int, Counter[str]]:
    """Each job's attempt outcomes, counted."""
    async with context.sessions() as session:
        rows = await session.execute(
            select(JobAttempt.job_id, JobAttempt.outcome, func.count())
            .where(JobAttempt.job_id.in_(job_ids))
            .group_by(JobAttempt.job_id, JobAttempt.outcome)
        )
        found: dict[int, Counter[str]] = {job_id: Counter() for job_id in job_ids}
        for job_id, outcome, count in rows:
            found[job_id][outcome] = count
    return found


async def statuses(context: AppContext, job_ids: list[int]) -> Counter[str]:
    async with context.sessions() as session:
        rows = await session.execute(
            select(PassbackJob.status, func.count())
            .where(PassbackJob.id.in_(job_ids))
            .group_by(PassbackJob.status)
        )
        return Counter({str(status): int(count) for status, count in rows})


class JobLines(logging.Handler):
    """The service's log lines, by the job they name (None: no job)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: Counter[int | None] = Counter()
        self.tracebacks = 0
        self.total = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.total += 1
        self.lines[job_id_var.get()] += 1
        if record.exc_info:
            self.tracebacks += 1


@contextmanager
def job_lines(level: int = logging.INFO) -> Iterator[JobLines]:
    handler = JobLines()
    handler.setLevel(level)
    logger = logging.getLogger("passback")
    previous = logger.level
    logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
