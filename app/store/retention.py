"""Retention: what is removed once it is older than `PASSBACK_RETENTION_DAYS` (180 by default).

- Finished **manual** jobs (delivered, superseded, failed) whose `finished_at` is older, with
  their attempts. Pending and in-flight jobs are never touched, whatever their age.
- Submission events received before then. A repeated `event_id` is answered from its event
  (the 200 replay), so the replay window is the retention time: a resend older than that
  counts as a new event.
- Teacher batches created before then that no longer have jobs (the `Idempotency-Key` of a
  send is remembered as long as its batch).
- Launch id_tokens recorded as used (one token binds one student) that expired before then:
  an expired token is refused anyway.

Kept whatever their age: automatic jobs (the row is what makes automatic passback fire once
per student and line item), launches, student work, formatives and platforms (current state,
not history).

Each statement touches at most `batch_size` rows found through an index (jobs by kind,
status and finish time; events and batches by time), each batch in its own transaction, so
pruning a large backlog never holds long locks beside live traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, exists, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.store.models import (
    Batch,
    JobAttempt,
    JobKind,
    JobStatus,
    PassbackJob,
    SubmissionEvent,
    UsedIdToken,
)

FINISHED_STATUSES = (JobStatus.delivered, JobStatus.superseded, JobStatus.failed)
PRUNE_BATCH_SIZE = 500


@dataclass
class Pruned:
    jobs: int = 0
    attempts: int = 0
    events: int = 0
    batches: int = 0
    used_id_tokens: int = 0


async def _prune_jobs(session: AsyncSession, cutoff: datetime, limit: int, pruned: Pruned) -> int:
    ids = list(
        await session.scalars(
            select(PassbackJob.id)
            .where(
                PassbackJob.kind == JobKind.manual,
                PassbackJob.status.in_(FINISHED_STATUSES),
                PassbackJob.finished_at < cutoff,
            )
            .limit(limit)
        )
    )
    if ids:
        attempts = await session.execute(delete(JobAttempt).where(JobAttempt.job_id.in_(ids)))
        jobs = await session.execute(delete(PassbackJob).where(PassbackJob.id.in_(ids)))
        pruned.attempts += attempts.rowcount  # type: ignore[attr-defined]
        pruned.jobs += jobs.rowcount  # type: ignore[attr-defined]
    return len(ids)


async def _prune_events(session: AsyncSession, cutoff: datetime, limit: int, pruned: Pruned) -> int:
    ids = list(
        await session.scalars(
            select(SubmissionEvent.event_id)
            .where(SubmissionEvent.received_at < cutoff)
            .limit(limit)
        )
    )
    if ids:
        await session.execute(delete(SubmissionEvent).where(SubmissionEvent.event_id.in_(ids)))
        pruned.events += len(ids)
    return len(ids)


async def _prune_batches(
    session: AsyncSession, cutoff: datetime, limit: int, pruned: Pruned
) -> int:
    has_jobs = exists().where(PassbackJob.batch_id == Batch.id)
    ids = list(
        await session.scalars(
            select(Batch.id).where(Batch.created_at < cutoff, ~has_jobs).limit(limit)
        )
    )
    if ids:
        await session.execute(delete(Batch).where(Batch.id.in_(ids)))
        pruned.batches += len(ids)
    return len(ids)


async def _prune_used_id_tokens(
    session: AsyncSession, cutoff: datetime, limit: int, pruned: Pruned
) -> int:
    keys = list(
        await session.scalars(
            select(UsedIdToken.token_key).where(UsedIdToken.expires_at < cutoff).limit(limit)
        )
    )
    if keys:
        await session.execute(delete(UsedIdToken).where(UsedIdToken.token_key.in_(keys)))
        pruned.used_id_tokens += len(keys)
    return len(keys)


async def prune(
    sessions: async_sessionmaker[AsyncSession],
    *,
    older_than: datetime,
    batch_size: int = PRUNE_BATCH_SIZE,
) -> Pruned:
    """Remove what the retention rules allow from before `older_than`, batch by batch."""
    pruned = Pruned()
    # Jobs before batches: a batch goes only once none of its jobs is left.
    for step in (_prune_jobs, _prune_events, _prune_batches, _prune_used_id_tokens):
        while True:
            async with sessions() as session, session.begin():
                found = await step(session, older_than, batch_size, pruned)
            if found < batch_size:
                break
    return pruned
