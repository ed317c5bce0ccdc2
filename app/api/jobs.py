"""Operator routes over passback jobs: list, read with attempts, retry."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi import status as http_status
from pydantic import BaseModel, Field

from app.api.auth import AdminCaller
from app.api.deps import Context, Session
from app.api.passback import problem
from app.api.problems import ProblemError, problem_responses
from app.manual.common import ManualPassbackError
from app.manual.jobs import (
    JobDetail,
    JobOut,
    decode_cursor,
    encode_cursor,
    retry_job,
)
from app.store import passback as store
from app.store.claims import UNREADABLE_VALUE_ERRORS
from app.store.models import JobStatus

router = APIRouter(prefix="/v1/passback/jobs", tags=["jobs"])

JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A job id (64-bit).")]
DEFAULT_PAGE = 50
MAX_PAGE = 200


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null on the last page."
    )
    unreadable_job_ids: list[int] = Field(
        default_factory=list,
        description="Jobs of this page whose rows cannot be read back (a stored value the "
        "service cannot decode); the delivery engine quarantines them. See the runbook.",
    )


@router.get(
    "",
    response_model=JobPage,
    responses=problem_responses(401, 403, 422),
    summary="List jobs, newest first",
)
async def list_jobs(
    session: Session,
    _caller: AdminCaller,
    formative_id: str | None = None,
    student_id: str | None = None,
    status: JobStatus | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> JobPage:
    try:
        before_id = decode_cursor(cursor) if cursor is not None else None
    except ManualPassbackError as exc:
        raise problem(exc) from exc
    where = store.JobFilter(formative_id=formative_id, student_id=student_id, status=status)
    jobs, unreadable = await store.list_jobs(session, where, before_id=before_id, limit=limit + 1)
    ids = sorted([job.id for job in jobs] + [row.job_id for row in unreadable], reverse=True)
    more = len(ids) > limit
    page = ids[:limit]
    return JobPage(
        items=[JobOut.of(job) for job in jobs if job.id in page],
        next_cursor=encode_cursor(page[-1]) if more else None,
        unreadable_job_ids=[row.job_id for row in unreadable if row.job_id in page],
    )


@router.get(
    "/{job_id}",
    response_model=JobDetail,
    responses=problem_responses(401, 403, 404, 409, 422),
    summary="Read a job with its attempts",
)
async def read_job(job_id: JobId, session: Session, _caller: AdminCaller) -> JobDetail:
    try:
        job = await store.get_job(session, job_id)
    except UNREADABLE_VALUE_ERRORS as exc:
        raise _unreadable(job_id, exc) from exc
    if job is None:
        raise ProblemError(404, "job_not_found", f"No job {job_id}.")
    return JobDetail.of(job)


@router.post(
    "/{job_id}/retry",
    status_code=http_status.HTTP_202_ACCEPTED,
    response_model=JobDetail,
    responses=problem_responses(401, 403, 404, 409, 422),
    summary="Retry a failed job",
    description="Requeues a failed job (or a quarantined one, once its row is fixed) as a new "
    "cycle of attempts with a fresh deadline. The job keeps its score timestamp, so a newer "
    "grade that reached Canvas meanwhile wins (the job then ends `superseded`). Refused (409) "
    "for jobs that are neither, and for a failed job that a newer job of the same student and "
    "assignment follows: retrying it would send an outdated grade.",
)
async def retry(
    job_id: JobId, context: Context, session: Session, _caller: AdminCaller
) -> JobDetail:
    try:
        await retry_job(
            session,
            job_id,
            now=context.clock(),
            deadline=timedelta(seconds=context.settings.delivery_deadline_seconds),
        )
    except ManualPassbackError as exc:
        raise problem(exc) from exc
    except UNREADABLE_VALUE_ERRORS as exc:
        raise _unreadable(job_id, exc) from exc
    context.wakeup.notify()
    job = await store.get_job(session, job_id)
    assert job is not None
    return JobDetail.of(job)


def _unreadable(job_id: int, exc: Exception) -> ProblemError:
    return ProblemError(
        409,
        "job_unreadable",
        f"Job {job_id}'s row cannot be read back ({type(exc).__name__}: {exc}); an operator "
        "must fix or remove it (README runbook: quarantined jobs).",
    )
