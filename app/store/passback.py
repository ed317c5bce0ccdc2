"""Queries behind manual passback and the operators' job views."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.store.claims import UnreadableJob, read_jobs
from app.store.models import (
    Batch,
    Formative,
    FormativeClass,
    FormativeStudent,
    JobAttempt,
    JobStatus,
    Launch,
    PassbackJob,
    Platform,
    StudentWork,
)


@dataclass(frozen=True)
class RosterEntry:
    """One student of a formative as the service knows them: their work, their launch, their
    place in a class named by `PUT /v1/formatives/{id}`, or any of these."""

    student_id: str
    work: StudentWork | None
    launch: Launch | None
    listed: FormativeStudent | None = None

    @property
    def class_id(self) -> str:
        if self.work is not None:
            return self.work.class_id
        if self.launch is not None:
            return self.launch.class_id
        assert self.listed is not None
        return self.listed.class_id

    @property
    def name(self) -> str | None:
        """The student's name from events, else from the formative's roster (None: unknown)."""
        if self.work is not None and self.work.student_name:
            return self.work.student_name
        if self.listed is not None and self.listed.name:
            return self.listed.name
        return None


async def get_formative(session: AsyncSession, formative_id: str) -> Formative | None:
    return await session.get(Formative, formative_id)


async def roster(session: AsyncSession, formative_id: str) -> list[RosterEntry]:
    """Every student with work or a launch on the formative, or listed in its classes,
    ordered by class then student."""
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
    listed = {
        student.student_id: student
        for student in await session.scalars(
            select(FormativeStudent).where(FormativeStudent.formative_id == formative_id)
        )
    }
    entries = [
        RosterEntry(
            student_id, works.get(student_id), launches.get(student_id), listed.get(student_id)
        )
        for student_id in works.keys() | launches.keys() | listed.keys()
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


async def last_delivered_by_pair(
    session: AsyncSession, pair_keys: Collection[str]
) -> dict[str, PassbackJob]:
    """The newest delivered job of each (line item, student) pair."""
    if not pair_keys:
        return {}
    newest = (
        select(func.max(PassbackJob.id))
        .where(
            PassbackJob.pair_key.in_(list(pair_keys)),
            PassbackJob.status == JobStatus.delivered,
        )
        .group_by(PassbackJob.pair_key)
        .scalar_subquery()
    )
    jobs = await session.scalars(select(PassbackJob).where(PassbackJob.id.in_(newest)))
    return {job.pair_key: job for job in jobs}


async def class_names(session: AsyncSession, formative_id: str) -> dict[str, str]:
    """The names of the formative's classes given by `PUT /v1/formatives/{id}`."""
    rows = await session.execute(
        select(FormativeClass.class_id, FormativeClass.name).where(
            FormativeClass.formative_id == formative_id
        )
    )
    return {class_id: name for class_id, name in rows if name}


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
