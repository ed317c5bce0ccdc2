"""PostgreSQL: a batch of intake events recorded in one statement (data-modifying CTEs), its
rows sent as JSON, run on the driver's own connection (app.store.driver). The rules are
app.store.events' (`record_events`), written in SQL: SQLite's step-by-step writes there are the
same rules in SQLAlchemy."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic_core import to_json
from sqlalchemy import Column, text

from app.store.driver import POSTGRESQL, DriverConnection, DriverStatement
from app.store.jobs import NewJob, fresh_job_state, pair_key
from app.store.models import JOBS_TABLE, JobStatus

if TYPE_CHECKING:
    from app.store.events import EventWrite


_ALLOCATE_JOB_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('passback_jobs', 'id')) FROM generate_series(1, :count)"
)
_ALLOCATE_JOB_IDS_ON_DRIVER = DriverStatement(_ALLOCATE_JOB_IDS)


def _pg_type(column: Column[Any]) -> str:
    return column.type.compile(dialect=POSTGRESQL)


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
_RECORD_EVENTS_ON_DRIVER = DriverStatement(_RECORD_EVENTS)


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


async def record_in_one_statement(
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
