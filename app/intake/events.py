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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property

from pydantic import (
    BaseModel,
    Field,
    TypeAdapter,
)
from pydantic_core import to_json
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.clock import Clock
from app.grading.eligibility import (
    Eligibility,
    LaunchFacts,
    SubmissionFacts,
    all_auto_graded,
    automatic_passback,
)
from app.grading.reasons import Reason
from app.intake.batching import MicroBatcher
from app.intake.event_in import SubmissionEventIn, request_digest, value_digest
from app.intake.schemas import ReasonOut
from app.lti.launch import can_post_scores
from app.metrics import Metrics
from app.store import events as store
from app.store.driver import intake_connection
from app.store.jobs import NewJob
from app.store.models import JobKind

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
