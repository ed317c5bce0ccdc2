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
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from pydantic_core import to_json
from sqlalchemy import (
    ARRAY,
    Boolean,
    ClauseElement,
    Column,
    String,
    and_,
    bindparam,
    case,
    exists,
    func,
    select,
    text,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import greenlet_spawn

from app.store.jobs import NewJob, enqueue_job, fresh_job_state, pair_key
from app.store.models import (
    JOBS_TABLE,
    Formative,
    JobKind,
    JobStatus,
    Launch,
    PassbackJob,
    Platform,
    StudentWork,
    SubmissionEvent,
)
from app.store.upsert import insert_for

_POSTGRESQL = asyncpg_dialect()  # type: ignore[no-untyped-call]  # (untyped in SQLAlchemy)


@dataclass(frozen=True)
class DriverConnection:
    """A pooled PostgreSQL connection used through its driver (asyncpg) alone."""

    pooled: PoolProxiedConnection
    dialect: Dialect

    @property
    def driver(self) -> Any:
        return self.pooled.driver_connection


IntakeConnection = DriverConnection | AsyncConnection
"""The driver's own connection on PostgreSQL; SQLAlchemy's, in a transaction, on SQLite."""


@asynccontextmanager
async def intake_connection(engine: AsyncEngine) -> AsyncIterator[IntakeConnection]:
    """A connection for reading the targets and recording a batch. On PostgreSQL no
    transaction is opened: the read and the write are single statements run on the driver
    (each atomic on its own), and the pooled connection is taken without SQLAlchemy's
    connection around it, whose setup and teardown cost more than a batch's statements
    (measured: 95 µs against 25 µs a batch). On SQLite, a transaction."""
    if engine.dialect.name == "postgresql":
        pooled = await engine.raw_connection()
        try:
            yield DriverConnection(pooled, engine.dialect)
        finally:
            await greenlet_spawn(pooled.close)  # (back to the pool; closing may wait on I/O)
        return
    async with engine.begin() as connection:
        yield connection


class _DriverStatement:
    """A statement compiled once for asyncpg and run on the driver's own connection: on the
    intake's hot path SQLAlchemy's per-execution work costs more CPU than asyncpg's.

    Errors come out as SQLAlchemy's (DBAPIError and its kinds, with the SQLSTATE), and a
    connection found closed is invalidated (dropped from the pool), as SQLAlchemy does.
    """

    def __init__(self, statement: ClauseElement) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=_POSTGRESQL))
        self.sql = compiled.string
        self.names = list(compiled.positiontup or ())
        self.fixed = dict(compiled.params)

    async def fetch(self, connection: DriverConnection, values: Mapping[str, Any]) -> list[Any]:
        arguments = [values[name] if name in values else self.fixed[name] for name in self.names]
        try:
            return cast(list[Any], await connection.driver.fetch(self.sql, *arguments))
        except Exception as error:
            await _raise_as_sqlalchemy(connection, error, self.sql)
            raise


async def _raise_as_sqlalchemy(connection: DriverConnection, error: Exception, sql: str) -> None:
    dialect = connection.dialect
    adapted: Any = connection.pooled.dbapi_connection
    try:
        adapted._handle_exception(error)  # raises the DBAPI-level translation of asyncpg's error
    except dialect.loaded_dbapi.Error as dbapi_error:
        closed = dialect.is_disconnect(dbapi_error, adapted, None)
        if closed:
            await greenlet_spawn(connection.pooled.invalidate, dbapi_error)
        raise DBAPIError.instance(
            sql, None, dbapi_error, dialect.loaded_dbapi.Error, connection_invalidated=closed
        ) from error
    except Exception as other:
        if connection.driver.is_closed():
            await greenlet_spawn(connection.pooled.invalidate, other)


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
_TARGETS_ON_DRIVER = _DriverStatement(
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
        return await _record_in_one_statement(connection, writes, received_at, deadline)
    return await _record_step_by_step(connection, writes, received_at, deadline)


_ALLOCATE_JOB_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('passback_jobs', 'id')) FROM generate_series(1, :count)"
)
_ALLOCATE_JOB_IDS_ON_DRIVER = _DriverStatement(_ALLOCATE_JOB_IDS)


def _pg_type(column: Column[Any]) -> str:
    return column.type.compile(dialect=_POSTGRESQL)


_EVENT_COLUMNS = {
    "event_id": "varchar",
    "request_digest": "varchar",
    "formative_id": "varchar",
    "student_id": "varchar",
    "type": "varchar",
    "occurred_at": "timestamptz",
    "decision": "varchar",
    "response_body": "text",
    "job_id": "bigint",
    "title": "varchar",
    "organization_id": "varchar",
    "license": "varchar",
    "auto_passback": "boolean",
    "all_auto_graded": "boolean",
    "teacher_ids": "json",
    "class_id": "varchar",
    "student_name": "varchar",
    "started": "boolean",
    "submitted": "boolean",
    "attempt": "integer",
    "score": "numeric",
    "max_score": "numeric",
    "submitted_at": "timestamptz",
    "response_url": "varchar",
}
"""The batch's columns and their types: the rows go as one JSON parameter (`events`)."""

_JOB_INPUT = ["id", "pair_key", *(field.name for field in fields(NewJob))]
"""The new jobs' columns, their rows one JSON parameter (`jobs`); the rest are the same for
every job (`fresh_job_state`, bound once) or decided by the statement."""
_FRESH_JOB_COLUMNS = list(fresh_job_state(datetime.min, timedelta(0)))
# An automatic job's timestamp, as `score_timestamp_after` decides it for its kind: strictly
# later than the pair's earlier ones at whole-second precision, unless the grade is older.
_AUTOMATIC_TIMESTAMP = """CASE
    WHEN earlier.latest IS NULL OR j.score_timestamp >= earlier.next_second
         OR j.score_timestamp < earlier.latest THEN j.score_timestamp
    ELSE earlier.next_second END"""
_JOB_SELECTED = [
    _AUTOMATIC_TIMESTAMP if name == "score_timestamp" else f"j.{name}" for name in _JOB_INPUT
]


def _rows_of(parameter: str, columns: dict[str, str], alias: str) -> str:
    """The rows of a JSON array parameter as a table with typed columns. (One JSON text
    costs the driver far less to send than an array per column, and loses no digit: each
    value is read by its column type's own input, a number from its decimal text.)"""
    typed = ", ".join(f"{name} {kind}" for name, kind in columns.items())
    return f"json_to_recordset(CAST(CAST(:{parameter} AS text) AS json)) AS {alias}({typed})"


def _json_text(rows: list[dict[str, Any]]) -> str:
    """The rows as JSON text, written by pydantic-core (a fraction of `json.dumps`'s cost):
    decimals as their exact text and times in ISO 8601, each read by its column's type."""
    return to_json(rows).decode()


# PostgreSQL: the batch in one statement, its rows given as JSON. Each CTE sees the same
# snapshot; only the events whose id is new (`event`) have their jobs and facts written. A
# job's `new_submission`/`submission_unconfirmed` and timestamp follow `enqueue_job`'s rules
# (earlier jobs of the pair), and it supersedes its pair's pending jobs as `enqueue_job` does. A
# formative's row is inserted if missing (DO NOTHING takes no lock on an existing row) and
# updated, from the batch's newest event of it, only when a fact differs.
# (S608: what is put into the text is our own column names, never input.)
_RECORD_EVENTS = text(
    f"""
WITH input AS (
    SELECT * FROM {_rows_of("events", _EVENT_COLUMNS, "i")}
),
event AS (
    INSERT INTO submission_events (event_id, request_digest, formative_id, student_id, type,
                                   occurred_at, received_at, decision, response_body, job_id)
    SELECT event_id, request_digest, formative_id, student_id, type,
           occurred_at, :received_at, decision, response_body, job_id
    FROM input ORDER BY event_id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
),
recorded AS (
    SELECT input.* FROM input JOIN event USING (event_id)
),
job_input AS (
    SELECT j.* FROM {
        _rows_of("jobs", {name: _pg_type(JOBS_TABLE.c[name]) for name in _JOB_INPUT}, "j")
    }
    JOIN event USING (event_id)
),
job AS (
    INSERT INTO passback_jobs ({", ".join(_JOB_INPUT)}, {", ".join(_FRESH_JOB_COLUMNS)},
                               new_submission, submission_unconfirmed)
    SELECT {", ".join(_JOB_SELECTED)},
           {", ".join(f":f_{name}" for name in _FRESH_JOB_COLUMNS)},
           NOT earlier.delivered, earlier.sent AND NOT earlier.delivered
    FROM job_input j
    CROSS JOIN LATERAL (
        SELECT bool_or(e.status = :delivered) FILTER (WHERE e.submitted_at
                   IS NOT DISTINCT FROM j.submitted_at) IS TRUE AS delivered,
               bool_or(e.attempt_count > 0 OR e.status = :in_flight) FILTER (WHERE
                   e.submitted_at IS NOT DISTINCT FROM j.submitted_at) IS TRUE AS sent,
               max(e.score_timestamp) AS latest,
               date_trunc('second', max(e.score_timestamp)) + interval '1 second'
                   AS next_second
        FROM passback_jobs e
        WHERE e.pair_key = j.pair_key
    ) AS earlier
),
superseded AS (
    UPDATE passback_jobs old
    SET status = :superseded, superseded_by = pending.new_id, outcome_code = :superseded,
        updated_at = :received_at, finished_at = :received_at
    FROM (
        SELECT o.id, j.id AS new_id FROM job_input j
        CROSS JOIN LATERAL (
            -- OFFSET 0 keeps this a probe of ix_passback_jobs_pair per new job: flattened,
            -- the planner may walk every pending job instead when its statistics are old.
            SELECT id FROM passback_jobs WHERE pair_key = j.pair_key AND status = :pending
            OFFSET 0
        ) AS o
    ) AS pending
    WHERE old.id = pending.id
),
newest_of_formative AS (
    SELECT DISTINCT ON (formative_id) * FROM recorded ORDER BY formative_id, occurred_at DESC
),
new_formative AS (
    INSERT INTO formatives (id, title, organization_id, license, auto_passback,
                            all_auto_graded, teacher_ids, updated_at)
    SELECT formative_id, title, organization_id, license, auto_passback,
           all_auto_graded, teacher_ids, occurred_at
    FROM newest_of_formative
    ON CONFLICT (id) DO NOTHING
),
changed_formative AS (
    UPDATE formatives f
    SET title = n.title, organization_id = n.organization_id, license = n.license,
        auto_passback = n.auto_passback, all_auto_graded = n.all_auto_graded,
        teacher_ids = n.teacher_ids, updated_at = n.occurred_at
    FROM newest_of_formative n
    WHERE f.id = n.formative_id
      AND f.updated_at <= n.occurred_at
      AND (f.title, f.organization_id, f.license, f.auto_passback, f.all_auto_graded,
           CAST(f.teacher_ids AS jsonb))
          IS DISTINCT FROM
          (n.title, n.organization_id, n.license, n.auto_passback, n.all_auto_graded,
           CAST(n.teacher_ids AS jsonb))
),
work AS (
    INSERT INTO student_work AS known (formative_id, student_id, class_id, student_name,
                                       started, submitted, attempt, score, max_score,
                                       submitted_at, response_url, last_event_at)
    SELECT formative_id, student_id, class_id, student_name, started, submitted, attempt,
           score, max_score, submitted_at, response_url, occurred_at
    FROM recorded ORDER BY formative_id, student_id
    ON CONFLICT (formative_id, student_id) DO UPDATE
    SET class_id = excluded.class_id, student_name = excluded.student_name,
        started = excluded.started,
        -- Within one attempt the submission only moves forward (SPEC §2.1).
        submitted = CASE WHEN excluded.attempt = known.attempt
                         THEN known.submitted OR excluded.submitted
                         ELSE excluded.submitted END,
        submitted_at = CASE WHEN excluded.attempt = known.attempt
                            THEN COALESCE(known.submitted_at, excluded.submitted_at)
                            ELSE excluded.submitted_at END,
        attempt = excluded.attempt, score = excluded.score, max_score = excluded.max_score,
        response_url = COALESCE(excluded.response_url, known.response_url),
        last_event_at = excluded.last_event_at
    WHERE known.last_event_at <= excluded.last_event_at
)
SELECT event_id FROM event
"""  # noqa: S608
).bindparams(
    delivered=JobStatus.delivered.value,
    in_flight=JobStatus.in_flight.value,
    pending=JobStatus.pending.value,
    superseded=JobStatus.superseded.value,
)
_RECORD_EVENTS_ON_DRIVER = _DriverStatement(_RECORD_EVENTS)


def _event_row(write: EventWrite, body: str, job_id: int | None) -> dict[str, Any]:
    """The event's row of the batch's JSON."""
    formative, work = write.formative, write.work
    return {
        "event_id": write.event_id,
        "request_digest": write.request_digest,
        "formative_id": formative.id,
        "student_id": work.student_id,
        "type": write.type,
        "occurred_at": _utc(write.occurred_at),
        "decision": write.decision,
        "response_body": body,
        "job_id": job_id,
        "title": formative.title,
        "organization_id": formative.organization_id,
        "license": formative.license,
        "auto_passback": formative.auto_passback,
        "all_auto_graded": formative.all_auto_graded,
        "teacher_ids": formative.teacher_ids,
        "class_id": work.class_id,
        "student_name": work.student_name,
        "started": work.started,
        "submitted": work.submitted,
        "attempt": work.attempt,
        "score": work.score,
        "max_score": work.max_score,
        "submitted_at": _utc(work.submitted_at),
        "response_url": work.response_url,
    }


def _utc(moment: datetime | None) -> datetime | None:
    """In UTC: PostgreSQL's text input refuses offsets past ±15:59 that the intake accepts
    (any offset of a real instant), and the rows go to it as JSON text."""
    return None if moment is None else moment.astimezone(UTC)


async def _record_in_one_statement(
    connection: DriverConnection,
    writes: Sequence[EventWrite],
    received_at: datetime,
    deadline: timedelta,
) -> dict[str, str]:
    unreserved = sum(write.job is not None and write.reserved_job_id is None for write in writes)
    free_ids: Iterator[int] = iter(())
    if unreserved:
        rows = await _ALLOCATE_JOB_IDS_ON_DRIVER.fetch(connection, {"count": unreserved})
        free_ids = iter(row[0] for row in rows)
    answers: dict[str, str] = {}
    event_rows: list[dict[str, Any]] = []
    job_rows: list[dict[str, Any]] = []
    for write in writes:
        job_id = None if write.job is None else write.reserved_job_id or next(free_ids)
        answers[write.event_id] = write.answer(job_id)
        event_rows.append(_event_row(write, answers[write.event_id], job_id))
        if write.job is not None:
            key = pair_key(write.job.lineitem_url, write.job.lti_user_id)
            job = write.job
            times = {
                "score_timestamp": _utc(job.score_timestamp),
                "submitted_at": _utc(job.submitted_at),
            }
            job_rows.append({"id": job_id, "pair_key": key, **vars(job), **times})
    parameters: dict[str, Any] = {
        "received_at": received_at,
        "events": _json_text(event_rows),
        "jobs": _json_text(job_rows),
    }
    for name, value in fresh_job_state(received_at, deadline).items():
        parameters[f"f_{name}"] = value
    recorded = await _RECORD_EVENTS_ON_DRIVER.fetch(connection, parameters)
    return {row[0]: answers[row[0]] for row in recorded}


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
_ANSWERS_ON_DRIVER = _DriverStatement(
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
