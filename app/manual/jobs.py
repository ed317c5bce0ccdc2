"""The operators' view of jobs, cursor paging, and retrying a failed job."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timedelta
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.manual.common import (
    JsonDecimal,
    ManualPassbackError,
    explain,
)
from app.store import passback as store
from app.store.models import (
    JobKind,
    JobStatus,
    PassbackJob,
    PassbackMode,
)


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    started_at: datetime
    finished_at: datetime
    http_status: int | None
    outcome: str
    message: str | None = Field(description="The platform's answer or the error, verbatim.")


class JobOut(BaseModel):
    """A job as operators see it (read from the row's attributes; the comment stays out)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: JobKind
    status: JobStatus
    formative_id: str
    student_id: str
    class_id: str
    batch_id: str | None
    event_id: str | None
    acting_teacher_id: str | None
    platform_id: str
    lineitem_url: str
    lti_user_id: str
    mode: PassbackMode
    score: JsonDecimal | None
    max_score: JsonDecimal | None
    override_percent: JsonDecimal | None
    override_points: JsonDecimal | None
    complete: bool | None
    has_comment: bool = False
    score_timestamp: datetime
    submitted_at: datetime | None
    new_submission: bool
    maybe_delivered: bool
    attempt_count: int
    next_attempt_at: datetime
    deadline_at: datetime
    outcome_code: str | None
    outcome_text: str | None = Field(
        default=None, description="The teacher-facing explanation of the code."
    )
    platform_message: str | None
    canvas_points: JsonDecimal | None
    score_given: JsonDecimal | None
    score_maximum: JsonDecimal | None
    superseded_by: int | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, job: PassbackJob) -> Self:
        derived = {"has_comment": bool(job.comment), "outcome_text": explain(job.outcome_code)}
        return cls.model_validate(job).model_copy(update=derived)


class JobDetail(JobOut):
    """A job with its attempts (load them with the job: `store.get_job`)."""

    attempts: list[AttemptOut]


async def retry_job(
    session: AsyncSession, job_id: int, *, now: datetime, deadline: timedelta
) -> PassbackJob:
    """Put a failed job back in the queue for a new cycle of attempts, then commit.

    The same row is requeued (its attempts stay as history; its batch still shows it) with a
    fresh deadline and its original `score_timestamp`: the score still says "this is the grade
    as of then", so if a newer grade reached Canvas meanwhile, Canvas refuses the older one as
    stale and the job ends `superseded` instead of overwriting newer work. Only failed jobs
    with no newer job for the same student and line item can be retried: a superseded job
    lost to a newer one by design, and retrying an older job would send an outdated grade.
    """
    job = await store.get_job_for_update(session, job_id)
    if job is None:
        raise ManualPassbackError(404, "job_not_found", f"No job {job_id}.")
    if job.status not in (JobStatus.failed, JobStatus.quarantined):
        raise ManualPassbackError(
            409,
            "job_not_retryable",
            f"Only failed (or quarantined) jobs can be retried; job {job_id} is {job.status}.",
        )
    newer = await store.newer_job_of_pair(session, job)
    if newer is not None:
        raise ManualPassbackError(
            409,
            "newer_job_exists",
            f"Job {newer.id} is newer for the same student and assignment (it is {newer.status}); "
            "retrying this one would send an outdated grade. Send again instead.",
        )
    job.status = JobStatus.pending
    job.next_attempt_at = now
    job.deadline_at = now + deadline
    job.tries_since_queued = 0  # a new cycle: its backoff starts small again
    job.lease_owner = None
    job.lease_expires_at = None
    job.outcome_code = None
    job.platform_message = None
    job.finished_at = None
    job.updated_at = now
    await session.commit()
    return job


def encode_cursor(before_id: int) -> str:
    return _b64(json.dumps({"before": before_id}))


def decode_cursor(cursor: str) -> int:
    try:
        value: Any = json.loads(_unb64(cursor))
        before = value["before"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ManualPassbackError(
            422, "invalid_cursor", "The cursor is not one this API gave."
        ) from exc
    if not isinstance(before, int) or isinstance(before, bool) or before < 1:
        raise ManualPassbackError(422, "invalid_cursor", "The cursor is not one this API gave.")
    return before


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
