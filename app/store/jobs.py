"""The outbox: passback jobs enqueued, one per (line item, student) pair in order.

The delivery engine claims them (app.store.claims) and writes what it learned
(app.store.finishes)."""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, insert, inspect, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from app.store.models import JOBS_TABLE, JobKind, JobStatus, PassbackJob, PassbackMode, job_origin


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
    rules written in SQL: app/store/event_batch.py `_RECORD_EVENTS`.)
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
_JOB_COLUMNS = {
    attribute.key: attribute.columns[0].key for attribute in inspect(PassbackJob).column_attrs
}
_INSERT_JOB = insert(JOBS_TABLE).returning(JOBS_TABLE.c.id)
_SUPERSEDE_PENDING_OF_PAIR = (
    update(JOBS_TABLE)
    .where(
        JOBS_TABLE.c.pair_key == bindparam("b_key"),
        JOBS_TABLE.c.status == JobStatus.pending,
        JOBS_TABLE.c.id != bindparam("b_job"),
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
