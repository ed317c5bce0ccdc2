"""Queries of event intake: what the service knows of formatives and student work, the
student's passback target, and the record of each event with the answer it got.

Intake is the hot path, so it costs few round trips. On PostgreSQL the event, its answer
and its facts are written by one statement (data-modifying CTEs) on an autocommit
connection: atomic without BEGIN/COMMIT. On SQLite the same writes run as a few statements
in the caller's transaction. Either way:
- the facts are written only when the event is new (a reused `event_id` changes nothing);
- facts from an older event never overwrite those of a newer one (by the event's time);
- on PostgreSQL the formative's row is updated (and so locked) only when its facts change,
  so a class submitting the same formative at once is not serialised on it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import ClauseElement, and_, bindparam, exists, func, select, text
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.sql.compiler import SQLCompiler

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

Executor = AsyncConnection | AsyncSession


def _dialect_name(executor: Executor) -> str:
    if isinstance(executor, AsyncSession):
        return executor.get_bind().dialect.name
    return executor.dialect.name


@asynccontextmanager
async def intake_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for reading the target and recording one event. On PostgreSQL no
    transaction is opened: the read and an ineligible event's record are single statements
    run on the driver (each atomic on its own); on SQLite, a transaction."""
    if engine.dialect.name == "postgresql":
        async with engine.connect() as connection:
            yield connection
        return
    async with engine.begin() as connection:
        yield connection


@asynccontextmanager
async def session_in_transaction(connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    """An ORM session in a transaction on the intake connection, committed on exit (on
    SQLite it joins the transaction the connection already has open)."""
    async with AsyncSession(bind=connection, expire_on_commit=False) as session, session.begin():
        yield session


class _DriverStatement:
    """A statement compiled once for asyncpg and run on the driver's own connection: on the
    intake's hot path SQLAlchemy's per-execution work costs more CPU than asyncpg's.

    Errors come out as SQLAlchemy's (DBAPIError and its kinds, with the SQLSTATE), and a
    connection found closed is invalidated, as if run through SQLAlchemy.
    """

    def __init__(self, statement: ClauseElement) -> None:
        dialect = asyncpg_dialect()  # type: ignore[no-untyped-call]  # (untyped in SQLAlchemy)
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.sql = compiled.string
        self.names = list(compiled.positiontup or ())
        self.fixed = dict(compiled.params)

    async def fetchrow(self, connection: AsyncConnection, values: Mapping[str, Any]) -> Any:
        arguments = [values[name] if name in values else self.fixed[name] for name in self.names]
        pooled = await connection.get_raw_connection()
        driver = pooled.driver_connection
        assert driver is not None
        try:
            return await driver.fetchrow(self.sql, *arguments)
        except Exception as error:
            await _raise_as_sqlalchemy(connection, pooled.dbapi_connection, error, self.sql)
            raise


async def _raise_as_sqlalchemy(
    connection: AsyncConnection, adapted: Any, error: Exception, sql: str
) -> None:
    dialect = connection.dialect
    try:
        adapted._handle_exception(error)  # raises the DBAPI-level translation of asyncpg's error
    except dialect.loaded_dbapi.Error as dbapi_error:
        closed = dialect.is_disconnect(dbapi_error, adapted, None)
        if closed:
            await connection.invalidate()
        raise DBAPIError.instance(
            sql, None, dbapi_error, dialect.loaded_dbapi.Error, connection_invalidated=closed
        ) from error
    except Exception:
        if adapted._connection.is_closed():
            await connection.invalidate()


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


_TARGET_QUERY = (
    select(
        Launch.platform_id,
        Platform.active,
        Launch.lineitem_url,
        Launch.lti_user_id,
        Launch.ags_scopes,
        exists().where(
            and_(
                PassbackJob.formative_id == Launch.formative_id,
                PassbackJob.student_id == Launch.student_id,
                PassbackJob.kind == JobKind.automatic,
                PassbackJob.lineitem_url == Launch.lineitem_url,
                PassbackJob.lti_user_id == Launch.lti_user_id,
            )
        ),
    )
    .join(Platform, Platform.id == Launch.platform_id)
    .where(
        Launch.formative_id == bindparam("formative_id"),
        Launch.student_id == bindparam("student_id"),
    )
)


_TARGET_QUERY_ON_DRIVER = _DriverStatement(_TARGET_QUERY)


async def find_passback_target(
    executor: Executor, formative_id: str, student_id: str
) -> PassbackTarget | None:
    """The launch, whether its platform is active, and whether an automatic passback was
    already queued for its (line item, student) pair; one query."""
    values = {"formative_id": formative_id, "student_id": student_id}
    if isinstance(executor, AsyncConnection) and executor.dialect.name == "postgresql":
        row = await _TARGET_QUERY_ON_DRIVER.fetchrow(executor, values)
    else:
        row = (await executor.execute(_TARGET_QUERY, values)).first()
    if row is None:
        return None
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
    )


@dataclass(frozen=True)
class EventRecord:
    event_id: str
    request_digest: str
    formative_id: str
    student_id: str
    type: str
    occurred_at: datetime
    received_at: datetime
    decision: str
    response_body: str
    job_id: int | None


async def record_event(
    executor: Executor,
    record: EventRecord,
    formative: FormativeFacts,
    work: StudentWorkFacts,
) -> bool:
    """Keep the event with its answer and, if its id is new, its facts. False (and nothing
    written) when the id is already known. On SQLite, call inside a transaction."""
    if _dialect_name(executor) == "postgresql":
        return await _record_event_in_one_statement(executor, record, formative, work)
    return await _record_event_step_by_step(executor, record, formative, work)


# PostgreSQL: one statement. Each CTE sees the same snapshot; the facts are written only
# when `event` inserted a row. A formative's row is inserted if missing (DO NOTHING takes no
# lock on an existing row) and updated only when a fact differs.
_RECORD_EVENT_POSTGRESQL = text(
    """
WITH event AS (
    INSERT INTO submission_events (event_id, request_digest, formative_id, student_id, type,
                                   occurred_at, received_at, decision, response_body, job_id)
    VALUES (:event_id, :request_digest, :formative_id, :student_id, :type,
            :occurred_at, :received_at, :decision, :response_body, :job_id)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
),
new_formative AS (
    INSERT INTO formatives (id, title, organization_id, license, auto_passback,
                            all_auto_graded, teacher_ids, updated_at)
    SELECT CAST(:formative_id AS varchar), CAST(:title AS varchar),
           CAST(:organization_id AS varchar), CAST(:license AS varchar),
           CAST(:auto_passback AS boolean), CAST(:all_auto_graded AS boolean),
           CAST(:teacher_ids AS json), CAST(:occurred_at AS timestamptz)
    FROM event
    ON CONFLICT (id) DO NOTHING
),
changed_formative AS (
    UPDATE formatives
    SET title = :title, organization_id = :organization_id, license = :license,
        auto_passback = :auto_passback, all_auto_graded = :all_auto_graded,
        teacher_ids = CAST(:teacher_ids AS json), updated_at = :occurred_at
    WHERE id = :formative_id
      AND EXISTS (SELECT 1 FROM event)
      AND updated_at <= :occurred_at
      AND (title, organization_id, license, auto_passback, all_auto_graded,
           CAST(teacher_ids AS jsonb))
          IS DISTINCT FROM
          (CAST(:title AS varchar), CAST(:organization_id AS varchar),
           CAST(:license AS varchar), CAST(:auto_passback AS boolean),
           CAST(:all_auto_graded AS boolean), CAST(:teacher_ids AS jsonb))
),
work AS (
    INSERT INTO student_work AS known (formative_id, student_id, class_id, student_name,
                                       started, submitted, attempt, score, max_score,
                                       submitted_at, response_url, last_event_at)
    SELECT CAST(:formative_id AS varchar), CAST(:student_id AS varchar),
           CAST(:class_id AS varchar), CAST(:student_name AS varchar),
           CAST(:started AS boolean), CAST(:submitted AS boolean), CAST(:attempt AS integer),
           CAST(:score AS numeric), CAST(:max_score AS numeric),
           CAST(:submitted_at AS timestamptz), CAST(:response_url AS varchar),
           CAST(:occurred_at AS timestamptz)
    FROM event
    ON CONFLICT (formative_id, student_id) DO UPDATE
    SET class_id = excluded.class_id, student_name = excluded.student_name,
        started = excluded.started, submitted = excluded.submitted,
        attempt = excluded.attempt, score = excluded.score, max_score = excluded.max_score,
        submitted_at = excluded.submitted_at,
        response_url = COALESCE(excluded.response_url, known.response_url),
        last_event_at = excluded.last_event_at
    WHERE known.last_event_at <= excluded.last_event_at
)
SELECT count(*) FROM event
"""
).bindparams(
    bindparam("occurred_at", type_=StudentWork.last_event_at.type),
    bindparam("received_at", type_=SubmissionEvent.received_at.type),
    bindparam("submitted_at", type_=StudentWork.submitted_at.type),
)


_RECORD_EVENT_ON_DRIVER = _DriverStatement(_RECORD_EVENT_POSTGRESQL)


async def _record_event_in_one_statement(
    executor: Executor, record: EventRecord, formative: FormativeFacts, work: StudentWorkFacts
) -> bool:
    parameters: dict[str, Any] = {
        **vars(record),
        "title": formative.title,
        "organization_id": formative.organization_id,
        "license": formative.license,
        "auto_passback": formative.auto_passback,
        "all_auto_graded": formative.all_auto_graded,
        "teacher_ids": json.dumps(formative.teacher_ids),
        "class_id": work.class_id,
        "student_name": work.student_name,
        "started": work.started,
        "submitted": work.submitted,
        "attempt": work.attempt,
        "score": work.score,
        "max_score": work.max_score,
        "submitted_at": work.submitted_at,
        "response_url": work.response_url,
    }
    # In a session's transaction too: the driver's connection is the one in that transaction.
    connection = executor if isinstance(executor, AsyncConnection) else await executor.connection()
    row = await _RECORD_EVENT_ON_DRIVER.fetchrow(connection, parameters)
    return bool(row[0])


async def _record_event_step_by_step(
    executor: Executor, record: EventRecord, formative: FormativeFacts, work: StudentWorkFacts
) -> bool:
    event = (
        insert_for(executor, SubmissionEvent)
        .values(**asdict(record))
        .on_conflict_do_nothing(index_elements=[SubmissionEvent.event_id])
        .returning(SubmissionEvent.event_id)
    )
    if (await executor.execute(event)).first() is None:
        return False
    await _upsert_formative(executor, formative)
    await _upsert_student_work(executor, work)
    return True


async def _upsert_formative(executor: Executor, facts: FormativeFacts) -> None:
    values = asdict(facts)
    statement = insert_for(executor, Formative).values(**values)
    await executor.execute(
        statement.on_conflict_do_update(
            index_elements=[Formative.id],
            set_={name: value for name, value in values.items() if name != "id"},
            where=Formative.updated_at <= statement.excluded.updated_at,
        )
    )


async def _upsert_student_work(executor: Executor, facts: StudentWorkFacts) -> None:
    values = asdict(facts)
    statement = insert_for(executor, StudentWork).values(**values)
    changed = {
        name: value for name, value in values.items() if name not in ("formative_id", "student_id")
    }
    # An event without a response URL keeps the one an earlier event gave.
    changed["response_url"] = func.coalesce(
        statement.excluded.response_url, StudentWork.response_url
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


async def find_answer(executor: Executor, event_id: str) -> StoredAnswer | None:
    """The answer given to an event the first time it was received."""
    row = (
        await executor.execute(
            select(
                SubmissionEvent.request_digest,
                SubmissionEvent.decision,
                SubmissionEvent.response_body,
            ).where(SubmissionEvent.event_id == event_id)
        )
    ).first()
    return None if row is None else StoredAnswer(*row)
