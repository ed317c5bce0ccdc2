"""Following a batch: counts by status and each student's outcome with the teacher's text."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.manual.common import (
    JsonDecimal,
    explain,
)
from app.store import passback as store
from app.store.models import (
    Batch,
    JobStatus,
    PassbackJob,
    PassbackMode,
)

SKIPPED = "skipped"
STATUSES = (*(status.value for status in JobStatus), SKIPPED)


class BatchStudent(BaseModel):
    student_id: str
    class_id: str | None
    job_id: int | None
    status: str = Field(description="pending, in_flight, delivered, failed, superseded, skipped")
    reason: str | None = Field(description="A stable code: why it failed or was skipped.")
    message: str | None = Field(description="What the teacher should know or do.")
    platform_message: str | None = Field(description="The platform's own words, verbatim.")
    score_given: JsonDecimal | None
    canvas_points: JsonDecimal | None
    superseded_by: int | None
    updated_at: datetime | None


class BatchOut(BaseModel):
    batch_id: str
    formative_id: str
    mode: PassbackMode
    sent_by_teacher_id: str
    sent_via: str
    created_at: datetime
    done: bool = Field(description="True once no job of the batch is pending or in flight.")
    counts: dict[str, int]
    students: list[BatchStudent]


def _job_row(job: PassbackJob) -> BatchStudent:
    status = JobStatus(job.status)
    reason = job.outcome_code if status in (JobStatus.failed, JobStatus.superseded) else None
    message: str | None = None
    if status is JobStatus.superseded:
        reason = reason or "superseded"
        message = "A newer grade for this student was sent after this one; that one counts."
    elif reason is not None:
        message = explain(reason)
    return BatchStudent(
        student_id=job.student_id,
        class_id=job.class_id,
        job_id=job.id,
        status=status,
        reason=reason,
        message=message,
        platform_message=job.platform_message if status is JobStatus.failed else None,
        score_given=job.score_given,
        canvas_points=job.canvas_points,
        superseded_by=job.superseded_by,
        updated_at=job.finished_at or job.updated_at,
    )


async def batch_view(session: AsyncSession, batch: Batch) -> BatchOut:
    jobs = await store.batch_jobs(session, batch.id)
    students = [_job_row(job) for job in jobs]
    students += [
        BatchStudent(
            student_id=item["student_id"],
            class_id=None,
            job_id=None,
            status=SKIPPED,
            reason=item["reason"],
            message=item.get("message") or explain(item["reason"]),
            platform_message=None,
            score_given=None,
            canvas_points=None,
            superseded_by=None,
            updated_at=None,
        )
        for item in batch.skipped
    ]
    counted = Counter(student.status for student in students)
    return BatchOut(
        batch_id=batch.id,
        formative_id=batch.formative_id,
        mode=PassbackMode(batch.mode),
        sent_by_teacher_id=batch.sent_by_teacher_id,
        sent_via=batch.sent_via,
        created_at=batch.created_at,
        done=not (counted[JobStatus.pending] or counted[JobStatus.in_flight]),
        counts={status: counted[status] for status in STATUSES},
        students=students,
    )
