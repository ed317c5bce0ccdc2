"""Reading a service's PostgreSQL directly (not through the service, nor through a proxy)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.db import create_engine, create_session_factory
from app.store.models import JobAttempt, PassbackJob, SubmissionEvent
from tests.support import databases


async def new_postgres_database() -> str:
    """An empty database on the test server (drop it with `databases.drop_postgres_database`);
    skips the test when PostgreSQL is unreachable, unless PASSBACK_REQUIRE_POSTGRES=1."""
    if not await databases.postgres_reachable():
        if databases.postgres_required():
            pytest.fail("PostgreSQL is required (PASSBACK_REQUIRE_POSTGRES=1) but unreachable")
        pytest.skip("PostgreSQL is not reachable")
    return await databases.create_postgres_database()


@asynccontextmanager
async def reading(database_url: str) -> AsyncIterator[AsyncSession]:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with create_session_factory(engine)() as session:
            yield session
    finally:
        await engine.dispose()


async def jobs_by_status(database_url: str, formative_id: str | None = None) -> dict[str, int]:
    query = select(PassbackJob.status, func.count()).group_by(PassbackJob.status)
    if formative_id is not None:
        query = query.where(PassbackJob.formative_id == formative_id)
    async with reading(database_url) as session:
        return {str(status): int(count) for status, count in (await session.execute(query)).all()}


async def event_decisions(database_url: str, formative_id: str) -> dict[str, str]:
    """event_id → decision of every event stored for the formative."""
    query = select(SubmissionEvent.event_id, SubmissionEvent.decision).where(
        SubmissionEvent.formative_id == formative_id
    )
    async with reading(database_url) as session:
        return {
            str(event_id): str(decision)
            for event_id, decision in (await session.execute(query)).all()
        }


async def attempt_outcomes(database_url: str) -> dict[str, int]:
    query = select(JobAttempt.outcome, func.count()).group_by(JobAttempt.outcome)
    async with reading(database_url) as session:
        return {str(outcome): int(count) for outcome, count in (await session.execute(query)).all()}


async def attempts_per_job(database_url: str) -> Counter[int]:
    """How many jobs have had 1, 2, … attempt rows."""
    query = select(func.count()).select_from(JobAttempt).group_by(JobAttempt.job_id)
    async with reading(database_url) as session:
        return Counter(int(count) for count in (await session.scalars(query)).all())
