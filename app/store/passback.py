"""Queries behind manual passback and the operators' job views."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.store.jobs import UnreadableJob, read_jobs
from app.store.models import (
    Batch,
    Formative,
    JobAttempt,
    Launch,
    PassbackJob,
    Platform,
    StudentWork,
)


@dataclass(frozen=True)
class RosterEntry:
    """One student of a formative as the service knows them: their work, their launch, or both."""

    student_id: str
    work: StudentWork | None
    launch: Launch | None

    @property
    def class_id(self) -> str:
        if self.work is not None:
            return self.work.class_id
        assert self.launch is not None
        return self.launch.class_id


async def get_formative(session: AsyncSession, formative_id: str) -> Formative | None:
    return await session.get(Formative, formative_id)


async def roster(session: AsyncSession, formative_id: str) -> list[RosterEntry]:
    """Every student with work or a launch on the formative, ordered by class then student."""
    works = {
        work.student_id: work
        for work in await session.scalars(
            select(StudentWork).where(StudentWork.formative_id == formative_id)
        )
    }
    launches = {
        launch.student_id: launch
        for launch in await session.scalars(
            select(Launch).where(Launch.formative_id == formative_id)
        )
    }
    entries = [
        RosterEntry(student_id, works.get(student_id), launches.get(student_id))
        for student_id in works.keys() | launches.keys()
    ]
    entries.sort(key=lambda entry: (entry.class_id, entry.student_id))
    return entries


async def platforms_by_id(session: AsyncSession, ids: Collection[str]) -> dict[str, Platform]:
    if not ids:
        return {}
    found = await session.scalars(select(Platform).where(Platform.id.in_(list(ids))))
    return {platform.id: platform for platform in found}


async def latest_jobs_by_student(
    session: AsyncSession, formative_id: str
) -> dict[str, PassbackJob]:
    """The newest job (automatic or manual) of each student on the formative."""
    newest = (
        select(func.max(PassbackJob.id))
        .where(PassbackJob.formative_id == formative_id)
        .group_by(PassbackJob.student_id)
    )
    # Read by id, tolerantly: a job row that cannot be read back shows as no passback rather
    # than failing the preview (the delivery engine quarantines it; README runbook).
    jobs, _unreadable = await read_jobs(session, list(await session.scalars(newest)))
    return {job.student_id: job for job in jobs}


async def get_batch(session: AsyncSession, batch_id: str) -> Batch | None:
    return await session.get(Batch, batch_id)


async def find_batch_by_key(
    session: AsyncSession, formative_id: str, idempotency_key: str
) -> Batch | None:
    return await session.scalar(
        select(Batch).where(
            Batch.formative_id == formative_id, Batch.idempotency_key == idempotency_key
        )
    )


async def batch_jobs(session: AsyncSession, batch_id: str) -> Sequence[PassbackJob]:
    """The batch's jobs whose rows can be read (an unreadable one is quarantined)."""
    ids = await session.scalars(
        select(PassbackJob.id).where(PassbackJob.batch_id == batch_id).order_by(PassbackJob.id)
    )
    jobs, _unreadable = await read_jobs(session, list(ids))
    return jobs


@dataclass(frozen=True)
class JobFilter:
    formative_id: str | None = None
    student_id: str | None = None
    status: str | None = None


async def list_jobs(
    session: AsyncSession, where: JobFilter, *, before_id: int | None, limit: int
) -> tuple[list[PassbackJob], list[UnreadableJob]]:
    """Jobs newest first (ids only grow), at most `limit`, all older than `before_id` if given;
    and, apart, those of them whose rows cannot be read back."""
    query = select(PassbackJob.id).order_by(PassbackJob.id.desc()).limit(limit)
    if where.formative_id is not None:
        query = query.where(PassbackJob.formative_id == where.formative_id)
    if where.student_id is not None:
        query = query.where(PassbackJob.student_id == where.student_id)
    if where.status is not None:
        query = query.where(PassbackJob.status == where.status)
    if before_id is not None:
        query = query.where(PassbackJob.id < before_id)
    return await read_jobs(session, list(await session.scalars(query)))


async def get_job(session: AsyncSession, job_id: int) -> PassbackJob | None:
    return await session.scalar(
        select(PassbackJob)
        .where(PassbackJob.id == job_id)
        .options(selectinload(PassbackJob.attempts))
        .execution_options(populate_existing=True)
    )


async def get_job_for_update(session: AsyncSession, job_id: int) -> PassbackJob | None:
    """The job, row-locked on PostgreSQL so a worker cannot claim it while it is changed."""
    return await session.scalar(
        select(PassbackJob).where(PassbackJob.id == job_id).with_for_update()
    )


async def newer_job_of_pair(session: AsyncSession, job: PassbackJob) -> PassbackJob | None:
    """The newest job for the same (line item, student) created after `job`, if any."""
    return await session.scalar(
        select(PassbackJob)
        .where(PassbackJob.pair_key == job.pair_key, PassbackJob.id > job.id)
        .order_by(PassbackJob.id.desc())
        .limit(1)
    )


async def job_attempts(session: AsyncSession, job_id: int) -> Sequence[JobAttempt]:
    result = await session.scalars(
        select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.id)
    )
    return result.all()
