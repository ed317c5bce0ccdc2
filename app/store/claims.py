"""Claiming and leasing passback jobs: the delivery engine's queries before and during an
attempt (app.store.finishes writes what it learned)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import bindparam, exists, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.store.models import ATTEMPTS_TABLE, JOBS_TABLE, JobStatus, PassbackJob

# A claimed job is `in_flight` with a lease: `lease_owner` names the worker and
# `lease_expires_at` (mirrored in `next_attempt_at`, so expired leases are found through the
# same index as due jobs) says until when. A live worker renews its leases; a job whose lease
# ran out is returned to `pending` by any instance. Finishing writes only where the lease is
# still the finisher's, so a worker that lost its lease cannot overwrite the new holder's work.


# Other rows of the table in the claim's and the supersession's subqueries. Made once: an
# alias builds a proxy of every column on first use, which cost more CPU than the rest of a
# claim when each call made its own.
_SIBLING = aliased(PassbackJob, name="sibling")
_ELDER = aliased(PassbackJob, name="elder")

LEASE_EXPIRED = "lease_expired"


_PLATFORMS_WITH_PENDING_JOBS = text(
    """
    WITH RECURSIVE lanes(platform_id) AS (
        SELECT (SELECT platform_id FROM passback_jobs
                WHERE status = :pending ORDER BY platform_id LIMIT 1)
        UNION ALL
        SELECT (SELECT j.platform_id FROM passback_jobs j
                WHERE j.status = :pending AND j.platform_id > lanes.platform_id
                ORDER BY j.platform_id LIMIT 1)
        FROM lanes WHERE lanes.platform_id IS NOT NULL
    )
    SELECT platform_id FROM lanes WHERE platform_id IS NOT NULL
    """
)
_ORIGINS_WITH_PENDING_JOBS = text(
    """
    WITH RECURSIVE hosts(origin) AS (
        SELECT (SELECT origin FROM passback_jobs
                WHERE status = :pending AND platform_id = :platform ORDER BY origin LIMIT 1)
        UNION ALL
        SELECT (SELECT j.origin FROM passback_jobs j
                WHERE j.status = :pending AND j.platform_id = :platform
                  AND j.origin > hosts.origin
                ORDER BY j.origin LIMIT 1)
        FROM hosts WHERE hosts.origin IS NOT NULL
    )
    SELECT origin FROM hosts WHERE origin IS NOT NULL
    """
)


async def platforms_with_pending_jobs(session: AsyncSession) -> list[str]:
    """Ids of the platforms that have pending jobs (due or not): a skip scan over
    ix_passback_jobs_lane_due, one index probe per platform rather than per job."""
    rows = await session.execute(_PLATFORMS_WITH_PENDING_JOBS, {"pending": JobStatus.pending.value})
    return [str(row[0]) for row in rows]


async def lanes_with_pending_jobs(session: AsyncSession) -> list[tuple[str, str]]:
    """(platform id, origin) of every delivery lane that has pending jobs (due or not): skip
    scans over ix_passback_jobs_lane_due, one index probe per lane rather than per job."""
    lanes: list[tuple[str, str]] = []
    for platform_id in await platforms_with_pending_jobs(session):
        rows = await session.execute(
            _ORIGINS_WITH_PENDING_JOBS,
            {"pending": JobStatus.pending.value, "platform": platform_id},
        )
        lanes.extend((platform_id, str(row[0])) for row in rows)
    return lanes


async def defer_lane(
    session: AsyncSession, *, platform_id: str, origin: str, until: datetime, now: datetime
) -> int:
    """Move the next try of a delivery lane's pending jobs that are due before `until` to
    `until` (the lane's AGS host rests: app.delivery.lanes); how many moved. Their backoff
    count is unchanged: waiting out a host's rest is not a try."""
    moved = await session.execute(
        update(PassbackJob)
        .where(
            PassbackJob.status == JobStatus.pending,
            PassbackJob.platform_id == platform_id,
            PassbackJob.origin == origin,
            PassbackJob.next_attempt_at < until,
        )
        .values(next_attempt_at=until, updated_at=now),
        execution_options={"synchronize_session": False},
    )
    return cast(int, getattr(moved, "rowcount", 0) or 0)


async def claim_jobs(
    session: AsyncSession,
    *,
    platform_id: str,
    owner: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    origin: str | None = None,
) -> ClaimedJobs:
    """Lease up to `limit` due pending jobs of one platform (of its AGS host `origin`, when
    given: one delivery lane), oldest due first.

    A job is skipped while another job of its pair is in flight or an older one of its pair is
    still pending (deliveries of a pair go one at a time, in order). On PostgreSQL the
    candidates are locked `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on or
    take each other's rows; on SQLite the single UPDATE holds the database's write lock from
    its start, which serialises claimers. A leased row that cannot be read back is
    quarantined rather than returned. The caller commits.
    """
    sibling, elder = _SIBLING, _ELDER
    sibling_in_flight = exists().where(
        sibling.pair_key == PassbackJob.pair_key, sibling.status == JobStatus.in_flight
    )
    elder_pending = exists().where(
        elder.pair_key == PassbackJob.pair_key,
        elder.status == JobStatus.pending,
        elder.id < PassbackJob.id,
    )
    lane = [PassbackJob.platform_id == platform_id]
    if origin is not None:
        lane.append(PassbackJob.origin == origin)
    candidates = (
        select(PassbackJob.id)
        .where(
            PassbackJob.status == JobStatus.pending,
            *lane,
            PassbackJob.next_attempt_at <= now,
            ~sibling_in_flight,
            ~elder_pending,
        )
        .order_by(PassbackJob.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    expires = now + lease
    # Only ids and pair keys (our own hex digests) come back from the claim: a row that
    # cannot be read must not fail the claim of the others (it is quarantined below instead).
    claimed = await session.execute(
        update(PassbackJob)
        .where(PassbackJob.id.in_(candidates))
        .values(
            status=JobStatus.in_flight,
            lease_owner=owner,
            lease_expires_at=expires,
            next_attempt_at=expires,
            updated_at=now,
        )
        .returning(PassbackJob.id, PassbackJob.pair_key),
        execution_options={"synchronize_session": False},
    )
    pairs = {int(job_id): str(pair_key) for job_id, pair_key in claimed.tuples().all()}
    job_ids = list(pairs)
    superseded = await _supersede_claimed_by_newer_pending(session, pairs, now=now)
    if superseded:
        # Their newer jobs can go now (this transaction sees its own writes).
        more = await claim_jobs(
            session,
            platform_id=platform_id,
            owner=owner,
            now=now,
            lease=lease,
            limit=len(superseded),
            origin=origin,
        )
        kept = [job_id for job_id in job_ids if job_id not in superseded]
        jobs, unreadable = await read_jobs(session, kept)
        if unreadable:
            await quarantine_jobs(session, unreadable, now=now)
        return ClaimedJobs(jobs + more.jobs, unreadable + more.quarantined)
    jobs, unreadable = await read_jobs(session, job_ids)
    if unreadable:
        await quarantine_jobs(session, unreadable, now=now)
    return ClaimedJobs(jobs, unreadable)


async def _supersede_claimed_by_newer_pending(
    session: AsyncSession, pairs: Mapping[int, str], *, now: datetime
) -> set[int]:
    """A newer pending job of a claimed job's pair supersedes it, and every other older
    pending one of the pair (SPEC §2.5), before anything is sent: `enqueue_job` supersedes
    only the jobs it can see, so an automatic grade and a manual send committed at the same
    moment (the intake's statement takes no pair lock) may leave two pending. Newer is queued
    later (the higher id). The claim still takes the eldest pending job of a pair first, so
    concurrent claimers keep at most one delivery of a pair in flight. `pairs` maps each
    claimed job to its pair; returns the claimed jobs superseded (no longer leased).

    The newest pending job of the claimed pairs is found by one grouped read, not by a
    subquery per row: right after a burst of jobs is queued PostgreSQL's statistics still say
    almost nothing is pending, and it ran such a subquery by walking every pending job for
    each of them (116 ms for a claim of 24 among 1,200 pending; 1 ms this way).
    """
    if not pairs:
        return set()
    newest_pending = dict(
        (
            await session.execute(
                select(PassbackJob.pair_key, func.max(PassbackJob.id))
                .where(
                    PassbackJob.status == JobStatus.pending,
                    PassbackJob.pair_key.in_(set(pairs.values())),
                )
                .group_by(PassbackJob.pair_key)
            )
        )
        .tuples()
        .all()
    )
    stale = {
        job_id: newest_pending[pair_key]
        for job_id, pair_key in pairs.items()
        if newest_pending.get(pair_key, 0) > job_id
    }
    for job_id, newest in stale.items():
        await session.execute(
            update(PassbackJob)
            .where(
                PassbackJob.pair_key == pairs[job_id],
                or_(PassbackJob.status == JobStatus.pending, PassbackJob.id == job_id),
                PassbackJob.id < newest,
            )
            .values(
                status=JobStatus.superseded,
                superseded_by=newest,
                outcome_code="superseded",
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
                finished_at=now,
            ),
            execution_options={"synchronize_session": False},
        )
    return set(stale)


@dataclass(frozen=True)
class UnreadableJob:
    """A job row the database holds but the service cannot read back (a time outside years
    1–9999, a value the driver cannot decode): `error` says what failed."""

    job_id: int
    error: str


@dataclass(frozen=True)
class ClaimedJobs:
    """What a claim leased: the jobs to deliver, and the rows it quarantined instead."""

    jobs: list[PassbackJob]
    quarantined: list[UnreadableJob]


UNREADABLE_ROW = "unreadable_row"
UNREADABLE_VALUE_ERRORS: tuple[type[Exception], ...] = (ValueError, OverflowError, TypeError)
"""What decoding a stored value raises (asyncpg: OverflowError for a year past 9999; SQLite's
text times: ValueError). Database and connection errors are not among them."""


async def read_jobs(
    session: AsyncSession, job_ids: Sequence[int]
) -> tuple[list[PassbackJob], list[UnreadableJob]]:
    """The jobs of `job_ids` (in that order) and those whose rows cannot be read.

    One SELECT for all; only when it fails to decode, one per row, so an unreadable row
    costs its own read and nobody else's.
    """
    if not job_ids:
        return [], []
    query = select(PassbackJob).execution_options(populate_existing=True)
    try:
        found = {
            job.id: job
            for job in (await session.scalars(query.where(PassbackJob.id.in_(job_ids)))).all()
        }
        return [found[job_id] for job_id in job_ids if job_id in found], []
    except UNREADABLE_VALUE_ERRORS:
        pass
    jobs: list[PassbackJob] = []
    unreadable: list[UnreadableJob] = []
    for job_id in job_ids:
        try:
            job = await session.scalar(query.where(PassbackJob.id == job_id))
        except UNREADABLE_VALUE_ERRORS as exc:
            unreadable.append(UnreadableJob(job_id, f"{type(exc).__name__}: {exc}"))
            continue
        if job is not None:
            jobs.append(job)
    return jobs, unreadable


async def quarantine_jobs(
    session: AsyncSession, unreadable: Sequence[UnreadableJob], *, now: datetime
) -> None:
    """Set unreadable rows aside as `quarantined`: never claimed again, listed for operators
    (README runbook), each with an attempt row saying why. Writes no column it would read."""
    await session.execute(
        update(JOBS_TABLE)
        .where(JOBS_TABLE.c.id == bindparam("b_id"))
        .values(
            status=JobStatus.quarantined,
            lease_owner=None,
            lease_expires_at=None,
            outcome_code=UNREADABLE_ROW,
            platform_message=bindparam("b_message"),
            updated_at=now,
            finished_at=now,
        ),
        [{"b_id": row.job_id, "b_message": _unreadable_message(row)} for row in unreadable],
    )
    await session.execute(
        insert(ATTEMPTS_TABLE),
        [
            {
                "job_id": row.job_id,
                "started_at": now,
                "finished_at": now,
                "http_status": None,
                "outcome": UNREADABLE_ROW,
                "message": _unreadable_message(row),
            }
            for row in unreadable
        ],
    )


def _unreadable_message(row: UnreadableJob) -> str:
    return f"the job's row could not be read back ({row.error}); see the runbook"


async def renew_leases(
    session: AsyncSession, *, owner: str, job_ids: Collection[int], now: datetime, lease: timedelta
) -> int:
    """Extend the leases `owner` still holds; returns how many it holds.

    The rows are locked in id order, as `finish_jobs` writes them, so renewing the leases of
    jobs whose results are being written waits for the writer instead of deadlocking with it.
    """
    if not job_ids:
        return 0
    expires = now + lease
    held = (
        select(JOBS_TABLE.c.id)
        .where(
            JOBS_TABLE.c.id.in_(sorted(set(job_ids))),
            JOBS_TABLE.c.lease_owner == owner,
            JOBS_TABLE.c.status == JobStatus.in_flight,
        )
        .order_by(JOBS_TABLE.c.id)
        .with_for_update()
    )
    result = await session.execute(
        update(JOBS_TABLE)
        .where(JOBS_TABLE.c.id.in_(held.scalar_subquery()))
        .values(lease_expires_at=expires, next_attempt_at=expires, updated_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def release_expired_leases(session: AsyncSession, *, now: datetime) -> list[int]:
    """Return jobs whose worker stopped renewing to `pending`, due now.

    The worker may have posted before it died, so the job is marked `maybe_delivered`: the
    next delivery reads the student's result before sending again. Each gets an attempt row
    saying so.
    """
    expired = (
        select(JOBS_TABLE.c.id)
        .where(JOBS_TABLE.c.status == JobStatus.in_flight, JOBS_TABLE.c.next_attempt_at < now)
        .with_for_update(skip_locked=True)  # rows being written or renewed are not lost
    )
    released = await session.scalars(
        update(JOBS_TABLE)
        .where(JOBS_TABLE.c.id.in_(expired.scalar_subquery()))
        .values(
            status=JobStatus.pending,
            lease_owner=None,
            lease_expires_at=None,
            next_attempt_at=now,
            maybe_delivered=True,
            attempt_count=JOBS_TABLE.c.attempt_count + 1,
            outcome_code=LEASE_EXPIRED,
            updated_at=now,
        )
        .returning(JOBS_TABLE.c.id)
    )
    job_ids = list(released.all())
    if job_ids:
        await session.execute(
            insert(ATTEMPTS_TABLE),
            [
                {
                    "job_id": job_id,
                    "started_at": now,
                    "finished_at": now,
                    "http_status": None,
                    "outcome": LEASE_EXPIRED,
                    "message": "the worker delivering this job stopped before finishing it",
                }
                for job_id in job_ids
            ],
        )
    return job_ids


async def next_pending_at(session: AsyncSession) -> datetime | None:
    """When the earliest pending job falls due (None when nothing is pending)."""
    return await session.scalar(
        select(func.min(PassbackJob.next_attempt_at)).where(PassbackJob.status == JobStatus.pending)
    )
