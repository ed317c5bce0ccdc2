"""Finishing passback jobs: what a worker learned about the jobs it holds, written in
batches, only where the lease is still the finisher's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Integer, and_, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.store.models import ATTEMPTS_TABLE, JOBS_TABLE, JobStatus, PassbackJob
from app.store.types import ExactDecimal


@dataclass(frozen=True)
class AttemptRecord:
    """One try, as stored in job_attempts."""

    started_at: datetime
    finished_at: datetime
    http_status: int | None
    outcome: str
    message: str | None


@dataclass(frozen=True)
class JobFinish:
    """What a worker learned about a job it holds: its new state and the attempts made."""

    job_id: int
    owner: str
    status: JobStatus
    at: datetime
    next_attempt_at: datetime
    outcome_code: str | None
    platform_message: str | None
    new_submission: bool
    maybe_delivered: bool
    attempts: Sequence[AttemptRecord] = ()
    tries: int = 0
    """How many of `attempts` count toward the job's backoff (not throttled answers, not
    result reads)."""
    submission_unconfirmed: bool = False
    canvas_points: Decimal | None = None
    score_given: Decimal | None = None
    score_maximum: Decimal | None = None

    @property
    def is_final(self) -> bool:
        return self.status not in (JobStatus.pending, JobStatus.in_flight)


async def finish_jobs(session: AsyncSession, finishes: Sequence[JobFinish]) -> None:
    """Write many workers' results at once (two statements, whatever their number).

    A job whose lease was lost meanwhile keeps its state; its attempts are still recorded.
    """
    if not finishes:
        return
    finishes = sorted(finishes, key=lambda finish: finish.job_id)  # rows locked in id order
    await session.execute(
        update(JOBS_TABLE)
        .where(
            JOBS_TABLE.c.id == bindparam("b_id"),
            JOBS_TABLE.c.lease_owner == bindparam("b_owner"),
            JOBS_TABLE.c.status == JobStatus.in_flight,
        )
        .values(
            status=bindparam("b_status"),
            next_attempt_at=bindparam("b_next"),
            outcome_code=bindparam("b_code"),
            platform_message=bindparam("b_message"),
            new_submission=bindparam("b_new_submission"),
            maybe_delivered=bindparam("b_maybe_delivered"),
            submission_unconfirmed=bindparam("b_unconfirmed"),
            attempt_count=JOBS_TABLE.c.attempt_count + bindparam("b_attempts", type_=Integer),
            tries_since_queued=JOBS_TABLE.c.tries_since_queued
            + bindparam("b_tries", type_=Integer),
            canvas_points=func.coalesce(
                bindparam("b_points", type_=ExactDecimal()), JOBS_TABLE.c.canvas_points
            ),
            score_given=func.coalesce(
                bindparam("b_given", type_=ExactDecimal()), JOBS_TABLE.c.score_given
            ),
            score_maximum=func.coalesce(
                bindparam("b_maximum", type_=ExactDecimal()), JOBS_TABLE.c.score_maximum
            ),
            lease_owner=None,
            lease_expires_at=None,
            updated_at=bindparam("b_at"),
            finished_at=bindparam("b_finished"),
        ),
        [
            {
                "b_id": finish.job_id,
                "b_owner": finish.owner,
                "b_status": finish.status.value,
                "b_next": finish.next_attempt_at,
                "b_code": finish.outcome_code,
                "b_message": finish.platform_message,
                "b_new_submission": finish.new_submission,
                "b_maybe_delivered": finish.maybe_delivered,
                "b_unconfirmed": finish.submission_unconfirmed,
                "b_attempts": len(finish.attempts),
                "b_tries": finish.tries,
                "b_points": finish.canvas_points,
                "b_given": finish.score_given,
                "b_maximum": finish.score_maximum,
                "b_at": finish.at,
                "b_finished": finish.at if finish.is_final else None,
            }
            for finish in finishes
        ],
    )
    superseded = [finish.job_id for finish in finishes if finish.status is JobStatus.superseded]
    if superseded:
        await _confirm_superseded(session, superseded)
    attempts = [
        {
            "job_id": finish.job_id,
            "started_at": attempt.started_at,
            "finished_at": attempt.finished_at,
            "http_status": attempt.http_status,
            "outcome": attempt.outcome,
            "message": attempt.message,
        }
        for finish in finishes
        for attempt in finish.attempts
    ]
    if attempts:
        await session.execute(insert(ATTEMPTS_TABLE), attempts)


_NEWER = aliased(PassbackJob, name="newer")
"""Another row of the table in `_confirm_superseded`'s subquery, made once (an alias builds a
proxy of every column on first use)."""

NOT_SUPERSEDED = "platform_rejected"
"""What a job refused as stale becomes when no newer grade of ours is in the platform."""


async def _confirm_superseded(session: AsyncSession, job_ids: Sequence[int]) -> None:
    """A job the platform refused as stale ("before last updated timestamp", Moodle's 409) is
    `superseded` only when a newer grade of ours really is there: a delivered job of the
    same pair whose timestamp is not earlier (it becomes `superseded_by`). Otherwise the
    older grade in the platform is not ours, or not newer: the job fails (`platform_rejected`,
    the platform's words kept), so the teacher is told it did not land (SPEC §2.4)."""
    newer = _NEWER
    newest_delivered = (
        select(func.max(newer.id))
        .where(
            newer.pair_key == PassbackJob.pair_key,
            newer.id != PassbackJob.id,
            newer.status == JobStatus.delivered,
            newer.score_timestamp >= PassbackJob.score_timestamp,
        )
        .scalar_subquery()
    )
    mine = and_(
        PassbackJob.id.in_(list(job_ids)),
        PassbackJob.status == JobStatus.superseded,
        PassbackJob.superseded_by.is_(None),
    )
    await session.execute(
        update(PassbackJob)
        .where(mine)
        .values(superseded_by=newest_delivered)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(PassbackJob)
        .where(mine)
        .values(status=JobStatus.failed, outcome_code=NOT_SUPERSEDED)
        .execution_options(synchronize_session=False)
    )
