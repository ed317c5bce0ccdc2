"""The outbox: enqueueing passback jobs, and claiming, leasing and finishing them."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    Integer,
    Table,
    and_,
    bindparam,
    exists,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, make_transient_to_detached

from app.store.models import (
    JobAttempt,
    JobKind,
    JobStatus,
    PassbackJob,
    PassbackMode,
    job_origin,
)
from app.store.types import ExactDecimal


def pair_key(lineitem_url: str, lti_user_id: str) -> str:
    """One key per (Canvas line item, student): deliveries for a pair are serialised on it."""
    return hashlib.sha256(f"{lineitem_url}\n{lti_user_id}".encode()).hexdigest()


@dataclass(frozen=True)
class NewJob:
    """Everything needed to deliver one score later, without the launch or the event.
    (`origin` follows from `lineitem_url`.)"""

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
    origin: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin", job_origin(self.lineitem_url))


def fresh_job_state(now: datetime, deadline: timedelta) -> dict[str, Any]:
    """The bookkeeping columns of a job just queued: pending, due now, never tried."""
    return {
        "status": JobStatus.pending,
        "maybe_delivered": False,
        "attempt_count": 0,
        "tries_since_queued": 0,
        "next_attempt_at": now,
        "deadline_at": now + deadline,
        "created_at": now,
        "updated_at": now,
    }


ONE_SECOND = timedelta(seconds=1)


def score_timestamp_after(
    kind: JobKind, produced_at: datetime, previous: datetime | None
) -> datetime:
    """The timestamp a new job of a pair sends, given the latest timestamp of the pair's
    earlier jobs (SPEC §2.4): strictly later than it at whole-second precision (Moodle keeps
    whole seconds and answers 409 to an equal one; later by a second is later at any finer
    precision too), so a second grade within the same second carries the next second.

    A manual send is "the moment of sending": always after every earlier grade, since the
    teacher meant it to count. An automatic grade older than one already given keeps its
    time: it is older, and the platform keeps the newer grade (the job ends `superseded`).
    """
    if previous is None:
        return produced_at
    next_second = previous.replace(microsecond=0) + ONE_SECOND
    if produced_at >= next_second:
        return produced_at
    if kind == JobKind.automatic and produced_at < previous:
        return produced_at
    return next_second


def _advisory_key(key: str) -> int:
    """A pair key as a signed 64-bit number (PostgreSQL's advisory lock key)."""
    return int.from_bytes(bytes.fromhex(key[:16]), "big", signed=True)


async def lock_pairs(session: AsyncSession, keys: Collection[str]) -> None:
    """Serialise the enqueueing of jobs for these pairs with other transactions doing the
    same, until the caller's transaction ends: a transaction-scoped advisory lock per pair on
    PostgreSQL, taken in one order (so two sends of overlapping students cannot deadlock on
    them). Without it, concurrent sends each supersede only the pending jobs they can see and
    leave several pending. SQLite needs none: its write lock, taken at the caller's first
    write, serialises writers (call this after one)."""
    if not keys or session.get_bind().dialect.name != "postgresql":
        return
    await session.execute(
        text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"),
        {"keys": [_advisory_key(key) for key in sorted(set(keys))]},
    )


async def _earlier_passbacks_of_same_submission(
    session: AsyncSession, key: str, submitted_at: datetime | None
) -> tuple[bool, bool, datetime | None]:
    """Has this submission reached the platform for this pair: (surely, possibly)? And the
    latest timestamp of the pair's jobs.

    Surely: a job of it was delivered. Possibly: a job of it was sent (or is being sent)
    without an answer that says it landed.
    """
    same_submission = (
        PassbackJob.submitted_at.is_(None)
        if submitted_at is None
        else PassbackJob.submitted_at == submitted_at
    )
    of_submission = and_(PassbackJob.pair_key == key, same_submission)
    delivered = exists().where(of_submission, PassbackJob.status == JobStatus.delivered)
    sent = exists().where(
        of_submission,
        or_(PassbackJob.attempt_count > 0, PassbackJob.status == JobStatus.in_flight),
    )
    latest = (
        select(func.max(PassbackJob.score_timestamp))
        .where(PassbackJob.pair_key == key)
        .scalar_subquery()
    )
    row = (await session.execute(select(delivered, sent, latest))).one()
    return bool(row[0]), bool(row[1]), row[2]


async def enqueue_job(
    session: AsyncSession, new: NewJob, *, now: datetime, deadline: timedelta
) -> PassbackJob:
    """Add a pending job in the caller's transaction; older pending jobs for the pair are
    superseded.

    `new_submission` is true unless this submission surely reached the platform already. When
    it possibly did (an earlier job's outcome is unknown), the job is `submission_unconfirmed`:
    the delivery reads the student's result before opening a submission. Its timestamp is
    decided here, once, from the pair's earlier ones (`score_timestamp_after`). Concurrent
    enqueuers of one pair must hold `lock_pairs`.

    (Event intake on PostgreSQL queues automatic jobs in its batch statement, by the same
    rules written in SQL: app/store/events.py `_RECORD_EVENTS`.)
    """
    key = pair_key(new.lineitem_url, new.lti_user_id)
    surely, possibly, latest = await _earlier_passbacks_of_same_submission(
        session, key, new.submitted_at
    )
    fields = asdict(new)
    fields["score_timestamp"] = score_timestamp_after(new.kind, new.score_timestamp, latest)
    job = PassbackJob(
        **fields,
        pair_key=key,
        new_submission=not surely,
        submission_unconfirmed=possibly and not surely,
        **fresh_job_state(now, deadline),
    )
    await _insert_job(session, job)
    connection = await session.connection()
    await connection.execute(
        _SUPERSEDE_PENDING_OF_PAIR, {"b_key": key, "b_job": job.id, "b_now": now}
    )
    return job


# enqueue_job is on the intake's hot path: its statements are built once (compiled once), and
# the job goes in by a Core INSERT rather than a unit-of-work flush of a 45-column object.
_JOB_TABLE = cast(Table, PassbackJob.__table__)
_JOB_COLUMNS = {
    attribute.key: attribute.columns[0].key for attribute in inspect(PassbackJob).column_attrs
}
_INSERT_JOB = insert(_JOB_TABLE).returning(_JOB_TABLE.c.id)
_SUPERSEDE_PENDING_OF_PAIR = (
    update(_JOB_TABLE)
    .where(
        _JOB_TABLE.c.pair_key == bindparam("b_key"),
        _JOB_TABLE.c.status == JobStatus.pending,
        _JOB_TABLE.c.id != bindparam("b_job"),
    )
    .values(
        status=JobStatus.superseded,
        superseded_by=bindparam("b_job"),
        outcome_code="superseded",
        updated_at=bindparam("b_now"),
        finished_at=bindparam("b_now"),
    )
)


async def _insert_job(session: AsyncSession, job: PassbackJob) -> None:
    """INSERT the new `job` and make it a persistent object of `session` with its id (the
    values it was not given are loaded from the row if read)."""
    values = {
        column: job.__dict__[attribute]
        for attribute, column in _JOB_COLUMNS.items()
        if attribute in job.__dict__
    }
    await session.flush()  # the caller's pending rows (a batch) first; free when there are none
    connection = await session.connection()  # Core statements skip the ORM's execute path
    job.id = (await connection.execute(_INSERT_JOB, values)).scalar_one()
    make_transient_to_detached(job)
    session.add(job)


# --- Claiming, leases and finishing (the delivery engine's queries) ---------------------------
#
# A claimed job is `in_flight` with a lease: `lease_owner` names the worker and
# `lease_expires_at` (mirrored in `next_attempt_at`, so expired leases are found through the
# same index as due jobs) says until when. A live worker renews its leases; a job whose lease
# ran out is returned to `pending` by any instance. Finishing writes only where the lease is
# still the finisher's, so a worker that lost its lease cannot overwrite the new holder's work.

_jobs = cast(Table, PassbackJob.__table__)
_attempts = cast(Table, JobAttempt.__table__)
# Other rows of the table in the claim's and the supersession's subqueries. Made once: an
# alias builds a proxy of every column on first use, which cost more CPU than the rest of a
# claim when each call made its own.
_SIBLING = aliased(PassbackJob, name="sibling")
_ELDER = aliased(PassbackJob, name="elder")
_NEWEST = aliased(PassbackJob, name="newest")
_CLAIMED = aliased(PassbackJob, name="claimed")
_NEWER = aliased(PassbackJob, name="newer")

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
    # Only ids come back from the claim: a row that cannot be read must not fail the claim
    # of the others (it is quarantined below instead).
    claimed_ids = await session.scalars(
        update(PassbackJob)
        .where(PassbackJob.id.in_(candidates))
        .values(
            status=JobStatus.in_flight,
            lease_owner=owner,
            lease_expires_at=expires,
            next_attempt_at=expires,
            updated_at=now,
        )
        .returning(PassbackJob.id),
        execution_options={"synchronize_session": False},
    )
    job_ids = list(claimed_ids.all())
    superseded = await _supersede_claimed_by_newer_pending(session, job_ids, now=now)
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
    session: AsyncSession, job_ids: Sequence[int], *, now: datetime
) -> set[int]:
    """A newer pending job of a claimed job's pair supersedes it, and every other older
    pending one of the pair (SPEC §2.5), before anything is sent: `enqueue_job` supersedes
    only the jobs it can see, so an automatic grade and a manual send committed at the same
    moment (the intake's statement takes no pair lock) may leave two pending. Newer is queued
    later (the higher id). The claim still takes the eldest pending job of a pair first, so
    concurrent claimers keep at most one delivery of a pair in flight. Returns the claimed
    jobs superseded (no longer leased)."""
    if not job_ids:
        return set()
    newest, claimed = _NEWEST, _CLAIMED
    newest_pending = (
        select(func.max(newest.id))
        .where(newest.pair_key == PassbackJob.pair_key, newest.status == JobStatus.pending)
        .scalar_subquery()
    )
    superseded = await session.scalars(
        update(PassbackJob)
        .where(
            PassbackJob.pair_key.in_(select(claimed.pair_key).where(claimed.id.in_(job_ids))),
            or_(PassbackJob.status == JobStatus.pending, PassbackJob.id.in_(job_ids)),
            PassbackJob.id < newest_pending,
        )
        .values(
            status=JobStatus.superseded,
            superseded_by=newest_pending,
            outcome_code="superseded",
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
            finished_at=now,
        )
        .returning(PassbackJob.id),
        execution_options={"synchronize_session": False},
    )
    return set(superseded.all()).intersection(job_ids)


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
        update(_jobs)
        .where(_jobs.c.id == bindparam("b_id"))
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
        insert(_attempts),
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
        select(_jobs.c.id)
        .where(
            _jobs.c.id.in_(sorted(set(job_ids))),
            _jobs.c.lease_owner == owner,
            _jobs.c.status == JobStatus.in_flight,
        )
        .order_by(_jobs.c.id)
        .with_for_update()
    )
    result = await session.execute(
        update(_jobs)
        .where(_jobs.c.id.in_(held.scalar_subquery()))
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
        select(_jobs.c.id)
        .where(_jobs.c.status == JobStatus.in_flight, _jobs.c.next_attempt_at < now)
        .with_for_update(skip_locked=True)  # rows being written or renewed are not lost
    )
    released = await session.scalars(
        update(_jobs)
        .where(_jobs.c.id.in_(expired.scalar_subquery()))
        .values(
            status=JobStatus.pending,
            lease_owner=None,
            lease_expires_at=None,
            next_attempt_at=now,
            maybe_delivered=True,
            attempt_count=_jobs.c.attempt_count + 1,
            outcome_code=LEASE_EXPIRED,
            updated_at=now,
        )
        .returning(_jobs.c.id)
    )
    job_ids = list(released.all())
    if job_ids:
        await session.execute(
            insert(_attempts),
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
        update(_jobs)
        .where(
            _jobs.c.id == bindparam("b_id"),
            _jobs.c.lease_owner == bindparam("b_owner"),
            _jobs.c.status == JobStatus.in_flight,
        )
        .values(
            status=bindparam("b_status"),
            next_attempt_at=bindparam("b_next"),
            outcome_code=bindparam("b_code"),
            platform_message=bindparam("b_message"),
            new_submission=bindparam("b_new_submission"),
            maybe_delivered=bindparam("b_maybe_delivered"),
            submission_unconfirmed=bindparam("b_unconfirmed"),
            attempt_count=_jobs.c.attempt_count + bindparam("b_attempts", type_=Integer),
            tries_since_queued=_jobs.c.tries_since_queued + bindparam("b_tries", type_=Integer),
            canvas_points=func.coalesce(
                bindparam("b_points", type_=ExactDecimal()), _jobs.c.canvas_points
            ),
            score_given=func.coalesce(
                bindparam("b_given", type_=ExactDecimal()), _jobs.c.score_given
            ),
            score_maximum=func.coalesce(
                bindparam("b_maximum", type_=ExactDecimal()), _jobs.c.score_maximum
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
        await session.execute(insert(_attempts), attempts)


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


async def next_pending_at(session: AsyncSession) -> datetime | None:
    """When the earliest pending job falls due (None when nothing is pending)."""
    return await session.scalar(
        select(func.min(PassbackJob.next_attempt_at)).where(PassbackJob.status == JobStatus.pending)
    )
