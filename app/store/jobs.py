"""The outbox: enqueueing passback jobs (claiming and finishing live beside it)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import JobKind, JobStatus, PassbackJob, PassbackMode


def pair_key(lineitem_url: str, lti_user_id: str) -> str:
    """One key per (Canvas line item, student): deliveries for a pair are serialised on it."""
    return hashlib.sha256(f"{lineitem_url}\n{lti_user_id}".encode()).hexdigest()


@dataclass(frozen=True)
class NewJob:
    """Everything needed to deliver one score later, without the launch or the event."""

    kind: JobKind
    platform_id: str
    formative_id: str
    student_id: str
    class_id: str
    lineitem_url: str
    lti_user_id: str
    score_timestamp: datetime
    mode: PassbackMode = PassbackMode.grades
    score: Decimal | None = None
    max_score: Decimal | None = None
    override_percent: Decimal | None = None
    override_points: Decimal | None = None
    complete: bool | None = None
    comment: str | None = None
    submitted_at: datetime | None = None
    response_url: str | None = None
    batch_id: str | None = None
    event_id: str | None = None
    acting_teacher_id: str | None = None


async def _earlier_passback_of_same_submission(
    session: AsyncSession, key: str, submitted_at: datetime | None
) -> bool:
    """Has this submission already reached (or possibly reached) the platform for this pair?"""
    reached = or_(
        PassbackJob.attempt_count > 0,
        PassbackJob.status.in_([JobStatus.delivered, JobStatus.in_flight]),
    )
    same_submission = (
        PassbackJob.submitted_at.is_(None)
        if submitted_at is None
        else PassbackJob.submitted_at == submitted_at
    )
    query = select(exists().where(and_(PassbackJob.pair_key == key, reached, same_submission)))
    return bool(await session.scalar(query))


async def enqueue_job(
    session: AsyncSession, new: NewJob, *, now: datetime, deadline: timedelta
) -> PassbackJob:
    """Add a pending job in the caller's transaction; older pending jobs for the pair are
    superseded. `new_submission` is true only if this submission never reached the platform.
    """
    key = pair_key(new.lineitem_url, new.lti_user_id)
    first_of_submission = not await _earlier_passback_of_same_submission(
        session, key, new.submitted_at
    )
    job = PassbackJob(
        kind=new.kind,
        status=JobStatus.pending,
        pair_key=key,
        platform_id=new.platform_id,
        formative_id=new.formative_id,
        student_id=new.student_id,
        class_id=new.class_id,
        batch_id=new.batch_id,
        event_id=new.event_id,
        lineitem_url=new.lineitem_url,
        lti_user_id=new.lti_user_id,
        mode=new.mode,
        score=new.score,
        max_score=new.max_score,
        override_percent=new.override_percent,
        override_points=new.override_points,
        complete=new.complete,
        comment=new.comment,
        score_timestamp=new.score_timestamp,
        submitted_at=new.submitted_at,
        response_url=new.response_url,
        new_submission=first_of_submission,
        acting_teacher_id=new.acting_teacher_id,
        attempt_count=0,
        next_attempt_at=now,
        deadline_at=now + deadline,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    await session.flush()
    await session.execute(
        update(PassbackJob)
        .where(
            PassbackJob.pair_key == key,
            PassbackJob.status == JobStatus.pending,
            PassbackJob.id != job.id,
        )
        .values(
            status=JobStatus.superseded,
            superseded_by=job.id,
            outcome_code="superseded",
            updated_at=now,
            finished_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return job
