"""Aggregate reads for metrics and the runbook."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import JobStatus, PassbackJob


async def job_counts_by_status(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(PassbackJob.status, func.count()).group_by(PassbackJob.status)
    )
    counts = {status.value: 0 for status in JobStatus}
    counts.update({str(status): int(count) for status, count in rows.all()})
    return counts


async def oldest_pending_created_at(session: AsyncSession) -> datetime | None:
    return await session.scalar(
        select(func.min(PassbackJob.created_at)).where(PassbackJob.status == JobStatus.pending)
    )


@dataclass(frozen=True)
class QueueFigures:
    """The queue as `/metrics` shows it: jobs by status and the oldest pending job's creation."""

    jobs_by_status: dict[str, int]
    oldest_pending_created_at: datetime | None


async def queue_figures(session: AsyncSession) -> QueueFigures:
    return QueueFigures(
        jobs_by_status=await job_counts_by_status(session),
        oldest_pending_created_at=await oldest_pending_created_at(session),
    )
