"""Submission-event intake: record what Formative scored, decide automatic passback, and
queue the delivery when every condition holds (SPEC §2.1, §3).

Events that arrive together are handled in batches: the students' launches are read first
(one query) and each decision made in `app.grading`; then one atomic write keeps every
event with its answer, the formatives' and the students' facts, and the jobs of the eligible
ones, together or not at all (one statement on PostgreSQL, one transaction on SQLite). The
answer is stored byte for byte, so a repeated `event_id` gets exactly the first answer, even
when the repeat races the original.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticKnownError, to_json
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.clock import Clock
from app.grading.eligibility import (
    Eligibility,
    EventType,
    LaunchFacts,
    QuestionGrading,
    SubmissionFacts,
    all_auto_graded,
    automatic_passback,
)
from app.grading.reasons import Reason
from app.intake.batching import MicroBatcher
from app.intake.schemas import FormativeId, Moment, ReasonOut
from app.lti.launch import can_post_scores
from app.metrics import Metrics
from app.store import events as store
from app.store.driver import intake_connection
from app.store.jobs import NewJob
from app.store.models import JobKind

# ---------------------------------------------------------------------------------------------
# The event, validated strictly. Scores are exact decimals: the body is parsed with JSON
# numbers kept as Decimal (see `parse_json_exactly`), never through binary floats.


SCORE_MAX_DIGITS = 30
SCORE_MAX_PLACES = 12


def _digits(sign_digits_exponent: tuple[int, tuple[int, ...], int]) -> tuple[int, int]:
    """(decimal places, digits) of a finite Decimal's tuple, trailing zeros not counted."""
    _, digits, exponent = sign_digits_exponent
    significant = len(digits)
    while significant > 1 and digits[significant - 1] == 0:
        significant -= 1
        exponent += 1
    if exponent >= 0:
        return 0, significant + exponent
    return -exponent, max(significant, -exponent)


_WHOLE_DIGITS = SCORE_MAX_DIGITS - SCORE_MAX_PLACES
_WHOLE_LIMIT = 10**_WHOLE_DIGITS


def _exact_score(value: object) -> Decimal:
    """A score or a maximum: a JSON number (never a string or a boolean), at least 0, with
    at most 12 decimal places and 30 digits (trailing zeros aside), kept exactly; -0 is 0.

    One function rather than pydantic's chain of constraint validators: each event carries
    a number per question, and this runs on the intake's hot path. Plain values (a whole
    number, or a positive decimal with few places) pass at once; the rest are examined by
    `_checked_score`, which gives the same answer for those (a property test holds it)."""
    kind = type(value)
    if kind is int:
        if 0 <= cast(int, value) < _WHOLE_LIMIT:
            return Decimal(cast(int, value))
    elif kind is Decimal:
        number = cast(Decimal, value)
        if (
            number.is_finite()
            and number > 0
            and number.adjusted() < _WHOLE_DIGITS
            and cast(int, number.as_tuple().exponent) >= -SCORE_MAX_PLACES
        ):
            return number
    return _checked_score(value)


def _checked_score(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError("must be a JSON number")
    number = value if isinstance(value, Decimal) else Decimal(value)
    if not number.is_finite():
        raise ValueError("must be a finite number")
    if number < 0:
        raise PydanticKnownError("greater_than_equal", {"ge": 0})
    places, digits = _digits(cast(tuple[int, tuple[int, ...], int], number.as_tuple()))
    if places > SCORE_MAX_PLACES:
        raise PydanticKnownError("decimal_max_places", {"decimal_places": SCORE_MAX_PLACES})
    if digits - places > _WHOLE_DIGITS:
        raise PydanticKnownError("decimal_whole_digits", {"whole_digits": _WHOLE_DIGITS})
    return Decimal(0) if number == 0 else number


Score = Annotated[
    Decimal,
    PlainValidator(_exact_score),
    PlainSerializer(str, return_type=str, when_used="json"),  # as pydantic writes a Decimal
    WithJsonSchema({"type": "number", "minimum": 0}),
]
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


_EVENT_JSON = SubmissionEventIn.__pydantic_serializer__


class MalformedJsonError(ValueError):
    """The body is not JSON (or uses NaN/Infinity, which JSON does not have)."""


def _refuse_constant(name: str) -> Any:
    raise MalformedJsonError(f"{name} is not a JSON number")


_EXACT_JSON = json.JSONDecoder(parse_float=Decimal, parse_constant=_refuse_constant)


def parse_json_exactly(body: bytes) -> Any:
    """JSON with every non-integer number as an exact Decimal. (What `json.loads` does with
    bytes, with one decoder made once rather than one per call.)"""
    try:
        return _EXACT_JSON.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJsonError(str(exc)) from exc
    except RecursionError as exc:  # nested deeper than the decoder's stack allows
        raise MalformedJsonError("the JSON is nested too deeply") from exc


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


MAX_TRIES = 3
"""Writes of a batch tried again after a deadlock, or of one event after its automatic
passback's pair was taken by a concurrent event."""

_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock, serialization failure


def request_digest(event: SubmissionEventIn) -> str:
    """SHA-256 of the event's JSON (`model_dump_json`'s bytes, taken from the serializer):
    the digest earlier releases stored, numbers spelled as sent."""
    return hashlib.sha256(_EVENT_JSON.to_json(event)).hexdigest()


_NUMBERS = re.compile(rb'"(points|score|max_score)":"([^"]+)"')
"""The event's numbers (`Score`s) in its JSON, where the serializer writes them as strings."""


def _value_text(number: Decimal) -> str:
    """One spelling per value: 7, 7.0, 7e0 and 70e-1 are all `7`; 2.50 is `2.5`."""
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def _by_value(number: re.Match[bytes]) -> bytes:
    text = _value_text(Decimal(number[2].decode())).encode()
    return b'"' + number[1] + b'":"' + text + b'"'


def value_digest(event: SubmissionEventIn) -> str:
    """SHA-256 of the event's JSON with its numbers spelled by value, the digest stored now:
    a resend whose numbers are written otherwise (`7.0` for `7`) is the same event. For an
    event whose numbers are plain (no trailing zeros, no exponent: nearly every event) it is
    `request_digest`, so what earlier releases stored still matches, and it costs no more."""
    written = _EVENT_JSON.to_json(event)
    if not _plain_numbers(event):
        written = _NUMBERS.sub(_by_value, written)
    return hashlib.sha256(written).hexdigest()


def _plain_numbers(event: SubmissionEventIn) -> bool:
    """No number with an exponent or with trailing zeros after its point (what `str` writes
    of a Decimal is what the event's JSON holds)."""
    for number in (event.score, event.max_score, *(q.points for q in event.formative.questions)):
        text = str(number)
        if "E" in text or (text[-1] == "0" and "." in text):
            return False
    return True


def _same_event(stored_digest: str, intake: _Intake) -> bool:
    """Whether the event stored under this digest is this one: by value, or (stored by an
    earlier release, which kept the spelling's digest) spelled the same."""
    return stored_digest == intake.digest or stored_digest == request_digest(intake.event)


def _facts(
    event: SubmissionEventIn, submission: SubmissionFacts
) -> tuple[store.FormativeFacts, store.StudentWorkFacts]:
    formative = store.FormativeFacts(
        id=event.formative.id,
        title=event.formative.title,
        organization_id=event.organization.id,
        license=event.organization.license,
        auto_passback=event.formative.auto_passback,
        all_auto_graded=submission.all_auto_graded,
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


def _submission(event: SubmissionEventIn) -> SubmissionFacts:
    return SubmissionFacts(
        event_type=event.type,
        license=event.organization.license,
        auto_passback=event.formative.auto_passback,
        all_auto_graded=all_auto_graded([q.grading for q in event.formative.questions]),
        attempt=event.attempt,
        work_submitted=event.work_submitted,
    )


_A_LAUNCH_THAT_CAN_TAKE_IT = LaunchFacts(
    gradable=True, platform_active=True, automatic_job_exists=False
)


def may_queue(submission: SubmissionFacts) -> bool:
    """Whether the event is queued if the student's launch allows it (the launch is read
    afterwards; this decides only whether to reserve a job id with that read)."""
    return automatic_passback(submission, _A_LAUNCH_THAT_CAN_TAKE_IT).eligible


def decide(
    submission: SubmissionFacts, target: store.PassbackTarget | None, *, pair_taken: bool = False
) -> Eligibility:
    """The automatic-passback decision for an event, given the student's passback target."""
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


def _automatic_job(event: SubmissionEventIn, target: store.PassbackTarget) -> NewJob:
    assert target.lineitem_url is not None
    return NewJob(
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


def _decision(eligibility: Eligibility) -> Decision:
    return Decision.queued if eligibility.eligible else Decision.not_eligible


_REASON_LIST = TypeAdapter(list[ReasonOut])
_REASONS_JSON: dict[tuple[Reason, ...], str] = {}
"""The `reasons` of answers, as JSON, by reasons: few distinct lists occur (at most one per
subset of the codes), and each is written once."""


def _reasons_json(reasons: tuple[Reason, ...]) -> str:
    text = _REASONS_JSON.get(reasons)
    if text is None:
        text = _REASON_LIST.dump_json([ReasonOut.of(reason) for reason in reasons]).decode()
        _REASONS_JSON[reasons] = text
    return text


def _answer(event_id: str, eligibility: Eligibility, job_id: int | None) -> str:
    """The `EventDecision` as JSON, byte for byte what `model_dump_json` writes (a test holds
    them equal), put together from parts: this runs once per event."""
    return (
        f'{{"event_id":{to_json(event_id).decode()},"decision":"{_decision(eligibility)}",'
        f'"reasons":{_reasons_json(eligibility.reasons)},'
        f'"job_id":{"null" if job_id is None else int(job_id)}}}'
    )


@dataclass(frozen=True)
class _Intake:
    """One event on its way in, with the digest that tells a repeat from a reuse."""

    event: SubmissionEventIn
    digest: str

    @cached_property
    def submission(self) -> SubmissionFacts:
        return _submission(self.event)

    @property
    def pair(self) -> store.Pair:
        return (self.event.formative.id, self.event.student.id)

    def write(
        self, eligibility: Eligibility, target: store.PassbackTarget | None
    ) -> store.EventWrite:
        event = self.event
        formative, work = _facts(event, self.submission)
        job = None
        if eligibility.eligible:
            assert target is not None
            job = _automatic_job(event, target)
        reserved_job_id = None if target is None or job is None else target.reserved_job_id
        return store.EventWrite(
            event_id=event.event_id,
            request_digest=self.digest,
            type=event.type,
            occurred_at=event.occurred_at,
            decision=_decision(eligibility),
            formative=formative,
            work=work,
            job=job,
            reserved_job_id=reserved_job_id,
            answer=lambda job_id: _answer(event.event_id, eligibility, job_id),
        )


def conflict_keys(event: SubmissionEventIn) -> tuple[str, store.Pair]:
    """What two events written in one batch must not share: the event id, and the student's
    work on a formative (each batch then writes a row once, in the order events came)."""
    return (event.event_id, (event.formative.id, event.student.id))


async def receive_events(
    engine: AsyncEngine,
    events: Sequence[SubmissionEventIn],
    *,
    now: datetime,
    deadline: timedelta,
) -> list[EventAnswer | Exception]:
    """Record the events, decide each, and queue the passbacks of the eligible ones
    (committed on return). The events must not share a `conflict_keys` key.

    One outcome per event, in order: its answer; EventIdReusedError when its `event_id` was
    used before for a different event; or the error that kept it from being recorded. The
    batch is written together; should that fail because of one event's values, or because
    another event queued an automatic passback's pair in between, each event is written
    alone so that only the one at fault fails (or is decided again).
    """
    intakes = [_Intake(event, value_digest(event)) for event in events]
    try:
        return list(await _receive_together(engine, intakes, now, deadline, pair_taken=False))
    except DBAPIError as error:  # (IntegrityError and DataError are kinds of it)
        if not _caused_by_a_value(error):
            raise
    outcomes: list[EventAnswer | Exception] = []
    for intake in intakes:
        try:
            outcomes.append(await _receive_alone(engine, intake, now, deadline))
        except Exception as error:  # (the caller raises it to this event's sender)
            outcomes.append(error)
    return outcomes


def _caused_by_a_value(error: DBAPIError) -> bool:
    """An error of what was written (a unique index, a value the database refuses), not of
    the database being unreachable."""
    if isinstance(error, IntegrityError | DataError):
        return True
    state = getattr(error.orig, "sqlstate", None)
    return isinstance(state, str) and state.startswith(("22", "23"))


async def _receive_alone(
    engine: AsyncEngine, intake: _Intake, now: datetime, deadline: timedelta
) -> EventAnswer | Exception:
    pair_taken = False
    for _ in range(MAX_TRIES):
        try:
            (outcome,) = await _receive_together(
                engine, [intake], now, deadline, pair_taken=pair_taken
            )
            return outcome
        except IntegrityError:
            # Its automatic passback's pair was queued by a concurrent event (or a repeat).
            pair_taken = True
    raise RuntimeError(f"event {intake.event.event_id!r} could not be recorded")


async def _receive_together(
    engine: AsyncEngine,
    intakes: Sequence[_Intake],
    now: datetime,
    deadline: timedelta,
    *,
    pair_taken: bool,
) -> Sequence[EventAnswer | Exception]:
    """Read the students' launches, decide, and write the batch at once (all or nothing);
    then the first answers of the events that were already known."""
    for tries_left in reversed(range(MAX_TRIES)):
        try:
            async with intake_connection(engine) as connection:
                targets = await store.find_passback_targets(
                    connection,
                    [intake.pair for intake in intakes],
                    may_queue=[may_queue(intake.submission) for intake in intakes],
                )
                decisions: dict[str, Decision] = {}
                writes = []
                for intake in intakes:
                    eligibility = decide(
                        intake.submission, targets.get(intake.pair), pair_taken=pair_taken
                    )
                    decisions[intake.event.event_id] = _decision(eligibility)
                    writes.append(intake.write(eligibility, targets.get(intake.pair)))
                recorded = await store.record_events(
                    connection, writes, received_at=now, deadline=deadline
                )
                known = [i.event.event_id for i in intakes if i.event.event_id not in recorded]
                stored = await store.find_answers(connection, known) if known else {}
            break
        except DBAPIError as error:
            if tries_left and getattr(error.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
                continue  # a deadlock with a concurrent batch: nothing was written
            raise
    outcomes: list[EventAnswer | Exception] = []
    for intake in intakes:
        event_id = intake.event.event_id
        if event_id in recorded:
            answer = recorded[event_id].encode()
            outcomes.append(EventAnswer(answer, decisions[event_id], first_time=True))
        elif event_id not in stored:
            outcomes.append(RuntimeError(f"event {event_id!r} could not be recorded"))
        elif not _same_event(stored[event_id].request_digest, intake):
            outcomes.append(EventIdReusedError(event_id))
        else:
            first = stored[event_id]
            outcomes.append(
                EventAnswer(first.response_body.encode(), Decision(first.decision), False)
            )
    return outcomes


class EventIntake:
    """The instance's way in for submission events: events that arrive together are written
    together (`MicroBatcher`), each caller getting its own answer once it is committed."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Clock,
        metrics: Metrics,
        deadline: timedelta,
        max_batch: int,
        batches_in_flight: int,
        overlap_from: int,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._metrics = metrics
        self._deadline = deadline
        self._batcher: MicroBatcher[SubmissionEventIn, EventAnswer] = MicroBatcher(
            self._write,
            keys_of=conflict_keys,
            max_size=max_batch,
            max_in_flight=batches_in_flight,
            overlap_from=overlap_from,
        )

    async def receive(self, event: SubmissionEventIn) -> EventAnswer:
        """The event's answer, committed. Raises EventIdReusedError when its `event_id` was
        used before for a different event, or the error that kept it from being recorded."""
        return await self._batcher.submit(event)

    async def _write(self, events: Sequence[SubmissionEventIn]) -> list[EventAnswer | Exception]:
        self._metrics.intake_batch_events.observe(len(events))
        return await receive_events(
            self._engine, events, now=self._clock(), deadline=self._deadline
        )
