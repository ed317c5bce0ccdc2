"""Submission-event intake: record what Formative scored, decide automatic passback, and
queue the delivery when every condition holds (SPEC §2.1, §3).

The student's launch is read first and the decision made in `app.grading`; then one atomic
write keeps the formative's and the student's facts, the job (when eligible) and the event
with its answer, together or not at all (one statement on PostgreSQL for an ineligible
event, one transaction for an eligible one). The answer is stored byte for byte, so a
repeated `event_id` gets exactly the first answer, even when the repeat races the original.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    model_validator,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app.grading.eligibility import (
    Eligibility,
    EventType,
    LaunchFacts,
    QuestionGrading,
    SubmissionFacts,
    all_auto_graded,
    automatic_passback,
)
from app.intake.schemas import FormativeId, ReasonOut
from app.lti.launch import can_post_scores
from app.store import events as store
from app.store.jobs import NewJob, enqueue_job
from app.store.models import JobKind

# ---------------------------------------------------------------------------------------------
# The event, validated strictly. Scores are exact decimals: the body is parsed with JSON
# numbers kept as Decimal (see `parse_json_exactly`), never through binary floats.


def _json_number(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError("must be a JSON number")
    return value


def _iso_text(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time string with a time zone")
    return value


def _plain_zero(value: Decimal) -> Decimal:
    return Decimal(0) if value == 0 else value


Score = Annotated[
    Decimal,
    BeforeValidator(_json_number),
    Field(ge=0, max_digits=30, decimal_places=12),
    AfterValidator(_plain_zero),
    WithJsonSchema({"type": "number", "minimum": 0}),
]
Moment = Annotated[AwareDatetime, BeforeValidator(_iso_text)]
Url = Annotated[StrictStr, Field(min_length=1, max_length=2048, pattern=r"^https?://\S+$")]


class UpdateCause(StrEnum):
    answer_completed = "answer_completed"
    answer_edited = "answer_edited"
    teacher_adjusted = "teacher_adjusted"
    answer_key_changed = "answer_key_changed"
    points_changed = "points_changed"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Organization(_Strict):
    id: FormativeId
    license: Annotated[StrictStr, Field(min_length=1, max_length=64)] = Field(
        description="`school_district` (passback included) or another tier.",
        examples=["school_district"],
    )


class Question(_Strict):
    id: FormativeId
    points: Score
    grading: QuestionGrading


class FormativeIn(_Strict):
    id: FormativeId
    title: Annotated[StrictStr, Field(max_length=1024)]
    auto_passback: StrictBool = Field(description="The formative's automatic-passback setting.")
    teacher_ids: list[FormativeId] = Field(max_length=1000)
    questions: list[Question] = Field(max_length=5000)


class Student(_Strict):
    id: FormativeId
    class_id: FormativeId
    name: Annotated[StrictStr, Field(max_length=1024)] = ""


class SubmissionEventIn(_Strict):
    """What happened to a student's work on a formative (SPEC §3)."""

    event_id: FormativeId = Field(description="Unique per event; a repeat gets the first answer.")
    type: EventType
    cause: UpdateCause | None = Field(default=None, description="Required when `type` is updated.")
    occurred_at: Moment = Field(description="When the score was produced in Formative.")
    organization: Organization
    formative: FormativeIn
    student: Student
    attempt: StrictInt = Field(ge=1, le=1_000_000)
    submitted_by: Literal["student", "teacher"] | None = None
    submitted_at: Moment | None = None
    score: Score
    max_score: Score
    response_url: Url | None = Field(
        default=None, description="The student's response in Formative (opened by SpeedGrader)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SubmissionEventIn:
        if self.type is EventType.updated and self.cause is None:
            raise ValueError("'cause' is required when type is 'updated'")
        if self.type is not EventType.updated and self.cause is not None:
            raise ValueError("'cause' is only for type 'updated'")
        if self.type is EventType.submitted and (
            self.submitted_at is None or self.submitted_by is None or self.response_url is None
        ):
            raise ValueError(
                "a 'submitted' event needs 'submitted_at', 'submitted_by' and 'response_url'"
            )
        if self.type is EventType.started and self.submitted_at is not None:
            raise ValueError("a 'started' event has no 'submitted_at'")
        return self

    @property
    def work_submitted(self) -> bool:
        return self.type is not EventType.started and self.submitted_at is not None


class MalformedJsonError(ValueError):
    """The body is not JSON (or uses NaN/Infinity, which JSON does not have)."""


def _refuse_constant(name: str) -> Any:
    raise MalformedJsonError(f"{name} is not a JSON number")


def parse_json_exactly(body: bytes) -> Any:
    """JSON with every non-integer number as an exact Decimal."""
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJsonError(str(exc)) from exc


# ---------------------------------------------------------------------------------------------
# The answer.


class Decision(StrEnum):
    queued = "queued"
    not_eligible = "not_eligible"


class EventDecision(BaseModel):
    """What became of an event: queued for automatic passback, or why not."""

    event_id: str
    decision: Decision
    reasons: list[ReasonOut] = Field(description="Every unmet condition (empty when queued).")
    job_id: int | None = Field(description="The delivery job, when queued.")


@dataclass(frozen=True)
class EventAnswer:
    body: bytes
    decision: Decision
    first_time: bool
    """False for a repeated `event_id`: `body` is the answer given the first time."""


class EventIdReusedError(Exception):
    """The `event_id` was already used for a different event."""


class _AlreadyReceived(Exception):
    """Rolls back the transaction of a repeat (its facts were recorded the first time)."""


class _AutomaticPairTaken(Exception):
    """Another transaction queued the automatic passback of this pair first."""


MAX_TRIES = 3


def request_digest(event: SubmissionEventIn) -> str:
    return hashlib.sha256(event.model_dump_json().encode()).hexdigest()


def _facts(event: SubmissionEventIn) -> tuple[store.FormativeFacts, store.StudentWorkFacts]:
    formative = store.FormativeFacts(
        id=event.formative.id,
        title=event.formative.title,
        organization_id=event.organization.id,
        license=event.organization.license,
        auto_passback=event.formative.auto_passback,
        all_auto_graded=all_auto_graded([q.grading for q in event.formative.questions]),
        teacher_ids=list(event.formative.teacher_ids),
        updated_at=event.occurred_at,
    )
    work = store.StudentWorkFacts(
        formative_id=event.formative.id,
        student_id=event.student.id,
        class_id=event.student.class_id,
        student_name=event.student.name,
        started=True,
        submitted=event.work_submitted,
        attempt=event.attempt,
        score=event.score,
        max_score=event.max_score,
        submitted_at=event.submitted_at,
        response_url=event.response_url,
        last_event_at=event.occurred_at,
    )
    return formative, work


def decide(
    event: SubmissionEventIn, target: store.PassbackTarget | None, *, pair_taken: bool = False
) -> Eligibility:
    """The automatic-passback decision for `event`, given the student's passback target."""
    submission = SubmissionFacts(
        event_type=event.type,
        license=event.organization.license,
        auto_passback=event.formative.auto_passback,
        all_auto_graded=all_auto_graded([q.grading for q in event.formative.questions]),
        attempt=event.attempt,
        work_submitted=event.work_submitted,
    )
    launch = (
        None
        if target is None
        else LaunchFacts(
            gradable=can_post_scores(target.lineitem_url, target.ags_scopes),
            platform_active=target.platform_active,
            automatic_job_exists=target.automatic_job_exists or pair_taken,
        )
    )
    return automatic_passback(submission, launch)


async def _queue(
    session: AsyncSession,
    event: SubmissionEventIn,
    target: store.PassbackTarget,
    *,
    now: datetime,
    deadline: timedelta,
) -> int:
    assert target.lineitem_url is not None
    job = NewJob(
        kind=JobKind.automatic,
        platform_id=target.platform_id,
        formative_id=event.formative.id,
        student_id=event.student.id,
        class_id=event.student.class_id,
        lineitem_url=target.lineitem_url,
        lti_user_id=target.lti_user_id,
        score_timestamp=event.occurred_at,
        score=event.score,
        max_score=event.max_score,
        submitted_at=event.submitted_at,
        response_url=event.response_url,
        event_id=event.event_id,
    )
    try:
        return (await enqueue_job(session, job, now=now, deadline=deadline)).id
    except IntegrityError as exc:
        raise _AutomaticPairTaken from exc


def _decision(eligibility: Eligibility) -> Decision:
    return Decision.queued if eligibility.eligible else Decision.not_eligible


def _answer(event: SubmissionEventIn, eligibility: Eligibility, job_id: int | None) -> bytes:
    answer = EventDecision(
        event_id=event.event_id,
        decision=_decision(eligibility),
        reasons=[ReasonOut.of(reason) for reason in eligibility.reasons],
        job_id=job_id,
    )
    return answer.model_dump_json().encode()


@dataclass(frozen=True)
class _Intake:
    """One event on its way in: the facts to record and the parts of its record."""

    event: SubmissionEventIn
    digest: str
    received_at: datetime

    def record(
        self, eligibility: Eligibility, job_id: int | None, body: bytes
    ) -> store.EventRecord:
        return store.EventRecord(
            event_id=self.event.event_id,
            request_digest=self.digest,
            formative_id=self.event.formative.id,
            student_id=self.event.student.id,
            type=self.event.type,
            occurred_at=self.event.occurred_at,
            received_at=self.received_at,
            decision=_decision(eligibility),
            response_body=body.decode(),
            job_id=job_id,
        )


async def _record(
    executor: AsyncConnection | AsyncSession,
    intake: _Intake,
    eligibility: Eligibility,
    job_id: int | None,
) -> bytes:
    """Record the event with its answer and facts; raises _AlreadyReceived for a known id."""
    body = _answer(intake.event, eligibility, job_id)
    formative, work = _facts(intake.event)
    record = intake.record(eligibility, job_id, body)
    if not await store.record_event(executor, record, formative, work):
        raise _AlreadyReceived
    return body


async def _record_and_queue(
    connection: AsyncConnection,
    intake: _Intake,
    eligibility: Eligibility,
    target: store.PassbackTarget,
    deadline: timedelta,
) -> bytes:
    async with store.session_in_transaction(connection) as session:
        job_id = await _queue(
            session, intake.event, target, now=intake.received_at, deadline=deadline
        )
        return await _record(session, intake, eligibility, job_id)


async def receive_event(
    engine: AsyncEngine,
    event: SubmissionEventIn,
    *,
    now: datetime,
    deadline: timedelta,
) -> EventAnswer:
    """Record the event, decide, and queue the passback when eligible (committed on return).

    The decision reads the student's launch first; the writes that follow are atomic: an
    ineligible event is one statement on PostgreSQL, an eligible one a transaction with its
    job, on the same connection. Should another event queue the pair's automatic passback in
    between, the unique index refuses the second job and the event is decided again.
    Raises EventIdReusedError when `event_id` was used before for a different event.
    """
    intake = _Intake(event, request_digest(event), now)
    pair_taken = False
    for _ in range(MAX_TRIES):
        try:
            async with store.intake_connection(engine) as connection:
                target = await store.find_passback_target(
                    connection, event.formative.id, event.student.id
                )
                eligibility = decide(event, target, pair_taken=pair_taken)
                if eligibility.eligible:
                    assert target is not None
                    body = await _record_and_queue(
                        connection, intake, eligibility, target, deadline
                    )
                else:
                    body = await _record(connection, intake, eligibility, None)
            return EventAnswer(body, _decision(eligibility), first_time=True)
        except _AutomaticPairTaken:
            # Queued by a concurrent event for the same pair (or a repeat of this one).
            pair_taken = True
        except _AlreadyReceived:
            break
    async with engine.connect() as connection:
        stored = await store.find_answer(connection, event.event_id)
    if stored is None:
        raise RuntimeError(f"event {event.event_id!r} could not be recorded")
    if stored.request_digest != intake.digest:
        raise EventIdReusedError(event.event_id)
    return EventAnswer(stored.response_body.encode(), Decision(stored.decision), first_time=False)
