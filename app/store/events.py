"""Queries of event intake: what the service knows of formatives and student work, the
student's passback target, and the record of each event with the answer it got.

Intake is the hot path, and events arrive together: a batch of them costs a few round trips
in all. On PostgreSQL the targets of a batch are one query, and its events, answers, facts
and jobs one statement (data-modifying CTEs) on an autocommit connection: atomic without
BEGIN/COMMIT. On SQLite the same writes run as a few statements per event in the caller's
transaction. Either way:
- the facts and the job of an event are written only when the event is new (a reused
  `event_id` changes nothing);
- facts from an older event never overwrite those of a newer one (by the event's time);
- within one attempt a student's submission only moves forward: an event that leaves out
  the submission keeps the one recorded (submitted stays submitted, the first time stays);
- on PostgreSQL the formative's row is updated (and so locked) only when its facts change,
  so a class submitting the same formative at once is not serialised on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ARRAY, Boolean, String, and_, bindparam, case, exists, func, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.store.driver import DriverConnection, DriverStatement, IntakeConnection
from app.store.event_batch import record_in_one_statement
from app.store.jobs import NewJob, enqueue_job
from app.store.models import (
    Formative,
    JobKind,
    Launch,
    PassbackJob,
    Platform,
    StudentWork,
    SubmissionEvent,
)
from app.store.upsert import insert_for


@dataclass(frozen=True)
class FormativeFacts:
    id: str
    title: str
    organization_id: str
    license: str
    auto_passback: bool
    all_auto_graded: bool
    teacher_ids: list[str]
    updated_at: datetime
    """The time of the event these facts come from."""


@dataclass(frozen=True)
class StudentWorkFacts:
    formative_id: str
    student_id: str
    class_id: str
    student_name: str
    started: bool
    submitted: bool
    attempt: int
    score: Decimal
    max_score: Decimal
    submitted_at: datetime | None
    response_url: str | None
    last_event_at: datetime


@dataclass(frozen=True)
class PassbackTarget:
    """The student's launch into the formative, as automatic passback needs it."""

    platform_id: str
    platform_active: bool
    lineitem_url: str | None
    lti_user_id: str
    ags_scopes: list[str]
    automatic_job_exists: bool
    reserved_job_id: int | None = None
    """An id for the automatic job, taken with the read when one may be queued (PostgreSQL)."""


_automatic_job_exists = exists().where(
    and_(
        PassbackJob.formative_id == Launch.formative_id,
        PassbackJob.student_id == Launch.student_id,
        PassbackJob.kind == JobKind.automatic,
        PassbackJob.lineitem_url == Launch.lineitem_url,
        PassbackJob.lti_user_id == Launch.lti_user_id,
    )
)
_target_columns = (
    Launch.platform_id,
    Platform.active,
    Launch.lineitem_url,
    Launch.lti_user_id,
    Launch.ags_scopes,
    _automatic_job_exists,
)

_TARGET_QUERY = (
    select(*_target_columns)
    .join(Platform, Platform.id == Launch.platform_id)
    .where(
        Launch.formative_id == bindparam("formative_id"),
        Launch.student_id == bindparam("student_id"),
    )
)

# PostgreSQL: the targets of a whole batch in one query, the pairs given as arrays. A job id
# is taken from the sequence for each pair whose event may be queued (`reserve`: eligible if
# the launch allows) and whose launch may take one, saving a round trip for it later; an id
# taken for a launch that turns out unable to (its scopes) is a gap in the ids, nothing more.
_wanted = (
    func.unnest(
        sql_cast(bindparam("formative_ids"), ARRAY(String)),
        sql_cast(bindparam("student_ids"), ARRAY(String)),
        sql_cast(bindparam("reserve"), ARRAY(Boolean)),
    )
    .table_valued("formative_id", "student_id", "reserve", with_ordinality="n")
    .render_derived()
)
_reserved_job_id = case(
    (
        and_(
            _wanted.c.reserve,
            Launch.lineitem_url.is_not(None),
            Platform.active,
            ~_automatic_job_exists,
        ),
        func.nextval(func.pg_get_serial_sequence("passback_jobs", "id")),
    )
)
_TARGETS_ON_DRIVER = DriverStatement(
    select(_wanted.c.n, *_target_columns, _reserved_job_id)
    .select_from(_wanted)
    .join(
        Launch,
        and_(
            Launch.formative_id == _wanted.c.formative_id,
            Launch.student_id == _wanted.c.student_id,
        ),
    )
    .join(Platform, Platform.id == Launch.platform_id)
)

Pair = tuple[str, str]
"""(formative id, student id)"""


def _target(row: Sequence[Any], *, reserved_job_id: int | None = None) -> PassbackTarget:
    platform_id, active, lineitem_url, lti_user_id, scopes, job_exists = row
    if isinstance(scopes, str):  # JSON text, as SQLAlchemy's asyncpg codec hands it over
        scopes = json.loads(scopes)
    return PassbackTarget(
        platform_id=platform_id,
        platform_active=bool(active),
        lineitem_url=lineitem_url,
        lti_user_id=lti_user_id,
        ags_scopes=list(scopes or []),
        automatic_job_exists=bool(job_exists),
        reserved_job_id=reserved_job_id,
    )


async def find_passback_targets(
    connection: IntakeConnection, pairs: Sequence[Pair], *, may_queue: Sequence[bool]
) -> dict[Pair, PassbackTarget]:
    """For each (formative, student) that has a launch: the launch, whether its platform is
    active, and whether an automatic passback was already queued for its (line item,
    student) pair. One query on PostgreSQL, where a job id is reserved for each pair whose
    event `may_queue`; one query per pair on SQLite."""
    if isinstance(connection, DriverConnection):
        rows = await _TARGETS_ON_DRIVER.fetch(
            connection,
            {
                "formative_ids": [formative_id for formative_id, _ in pairs],
                "student_ids": [student_id for _, student_id in pairs],
                "reserve": list(may_queue),
            },
        )
        return {pairs[row[0] - 1]: _target(row[1:7], reserved_job_id=row[7]) for row in rows}
    targets = {}
    for formative_id, student_id in pairs:
        values = {"formative_id": formative_id, "student_id": student_id}
        row = (await connection.execute(_TARGET_QUERY, values)).first()
        if row is not None:
            targets[(formative_id, student_id)] = _target(row)
    return targets


@dataclass(frozen=True)
class EventWrite:
    """One event to record: its facts, its automatic passback job if any, and its answer."""

    event_id: str
    request_digest: str
    type: str
    occurred_at: datetime
    decision: str
    formative: FormativeFacts
    work: StudentWorkFacts
    job: NewJob | None
    reserved_job_id: int | None
    """The job's id when one was reserved for it (`find_passback_targets`)."""
    answer: Callable[[int | None], str]
    """The answer to keep and give, once the job's id (or None) is known."""


async def record_events(
    connection: IntakeConnection,
    writes: Sequence[EventWrite],
    *,
    received_at: datetime,
    deadline: timedelta,
) -> dict[str, str]:
    """Record each event whose id is new, with its answer, its facts and its job; returns
    the answers recorded, by event id (an id already known is left out, nothing of it
    written). All or nothing: an error (a job's pair taken meanwhile: IntegrityError) writes
    none of them. On SQLite, call inside a transaction.

    Facts from an older event never overwrite those of a newer one (by the event's time).
    The writes must be of distinct event ids and distinct (formative, student) pairs.
    """
    if isinstance(connection, DriverConnection):
        return await record_in_one_statement(connection, writes, received_at, deadline)
    return await _record_step_by_step(connection, writes, received_at, deadline)


async def _record_step_by_step(
    connection: AsyncConnection,
    writes: Sequence[EventWrite],
    received_at: datetime,
    deadline: timedelta,
) -> dict[str, str]:
    answers: dict[str, str] = {}
    async with AsyncSession(bind=connection, expire_on_commit=False) as session:
        for write in writes:
            event = (
                insert_for(connection, SubmissionEvent)
                .values(
                    event_id=write.event_id,
                    request_digest=write.request_digest,
                    formative_id=write.formative.id,
                    student_id=write.work.student_id,
                    type=write.type,
                    occurred_at=write.occurred_at,
                    received_at=received_at,
                    decision=write.decision,
                    response_body="",
                )
                .on_conflict_do_nothing(index_elements=[SubmissionEvent.event_id])
                .returning(SubmissionEvent.event_id)
            )
            if (await connection.execute(event)).first() is None:
                continue  # known: nothing of it is written again
            await _upsert_formative(connection, write.formative)
            await _upsert_student_work(connection, write.work)
            job_id = None
            if write.job is not None:
                job_id = (
                    await enqueue_job(session, write.job, now=received_at, deadline=deadline)
                ).id
            answers[write.event_id] = write.answer(job_id)
            await connection.execute(
                update(SubmissionEvent)
                .where(SubmissionEvent.event_id == write.event_id)
                .values(response_body=answers[write.event_id], job_id=job_id)
            )
    return answers


async def _upsert_formative(executor: AsyncConnection, facts: FormativeFacts) -> None:
    values = asdict(facts)
    statement = insert_for(executor, Formative).values(**values)
    await executor.execute(
        statement.on_conflict_do_update(
            index_elements=[Formative.id],
            set_={name: value for name, value in values.items() if name != "id"},
            where=Formative.updated_at <= statement.excluded.updated_at,
        )
    )


async def _upsert_student_work(executor: AsyncConnection, facts: StudentWorkFacts) -> None:
    values = asdict(facts)
    statement = insert_for(executor, StudentWork).values(**values)
    changed = {
        name: value for name, value in values.items() if name not in ("formative_id", "student_id")
    }
    # An event without a response URL keeps the one an earlier event gave.
    changed["response_url"] = func.coalesce(
        statement.excluded.response_url, StudentWork.response_url
    )
    # Within one attempt the submission only moves forward: an update that leaves out the
    # submission keeps it, and the first submission time stays (SPEC §2.1).
    same_attempt = statement.excluded.attempt == StudentWork.attempt
    changed["submitted"] = case(
        (same_attempt, StudentWork.submitted | statement.excluded.submitted),
        else_=statement.excluded.submitted,
    )
    changed["submitted_at"] = case(
        (same_attempt, func.coalesce(StudentWork.submitted_at, statement.excluded.submitted_at)),
        else_=statement.excluded.submitted_at,
    )
    await executor.execute(
        statement.on_conflict_do_update(
            index_elements=[StudentWork.formative_id, StudentWork.student_id],
            set_=changed,
            where=StudentWork.last_event_at <= statement.excluded.last_event_at,
        )
    )


@dataclass(frozen=True)
class StoredAnswer:
    request_digest: str
    decision: str
    response_body: str


_ANSWER_COLUMNS = (
    SubmissionEvent.event_id,
    SubmissionEvent.request_digest,
    SubmissionEvent.decision,
    SubmissionEvent.response_body,
)
_ANSWERS_ON_DRIVER = DriverStatement(
    select(*_ANSWER_COLUMNS).where(
        SubmissionEvent.event_id == func.any(sql_cast(bindparam("event_ids"), ARRAY(String)))
    )
)


async def find_answers(
    connection: IntakeConnection, event_ids: Sequence[str]
) -> dict[str, StoredAnswer]:
    """The answers given to events the first time they were received, by event id."""
    if isinstance(connection, DriverConnection):
        rows = await _ANSWERS_ON_DRIVER.fetch(connection, {"event_ids": list(event_ids)})
    else:
        where = SubmissionEvent.event_id.in_(event_ids)
        rows = list(await connection.execute(select(*_ANSWER_COLUMNS).where(where)))
    return {row[0]: StoredAnswer(*row[1:]) for row in rows}
