"""Manual passback: what a teacher previews, sends and follows, and the operators' retry.

Sits between the API and the store. Decides which students can be sent and why not, builds
one job per student in one transaction (the delivery engine sends them), reads each Canvas
line item's points once for the preview, and reports a batch's outcome per student.

Overrides and complete/incomplete change only what goes to Canvas: nothing here writes
`student_work`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, model_validator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.grading.score import GradeMode, GradeSpec, percent, score_to_send
from app.store import passback as store
from app.store.jobs import NewJob, enqueue_job
from app.store.models import (
    Batch,
    Formative,
    JobAttempt,
    JobKind,
    JobStatus,
    PassbackJob,
    PassbackMode,
    Platform,
    new_id,
)

SCORE_SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/score"

# Why a student cannot be sent (preview rows, `skipped` of a send).
NOT_LAUNCHED_FROM_LMS = "not_launched_from_lms"
NOT_A_CANVAS_ASSIGNMENT = "not_a_canvas_assignment"
PLATFORM_NOT_REGISTERED = "platform_not_registered"
NOT_STARTED = "not_started"
ASSIGNMENT_NOT_LINKED = "assignment_not_linked"

# Preview warnings about a Canvas assignment.
CANVAS_POINTS_ZERO = "canvas_points_zero"
CANVAS_POINTS_UNAVAILABLE = "canvas_points_unavailable"

SKIP_REASONS: Mapping[str, str] = {
    NOT_LAUNCHED_FROM_LMS: "The student has not opened this formative from the Canvas "
    "assignment, so there is no Canvas gradebook entry to send to. Ask them to open it from "
    "Canvas (not directly on Formative's website).",
    NOT_A_CANVAS_ASSIGNMENT: "The student opened this formative from Canvas, but not from a "
    "graded Canvas assignment, so there is no gradebook column to send to.",
    PLATFORM_NOT_REGISTERED: "The Canvas the student launched from is not registered with "
    "grade passback (or was switched off). An administrator must register it.",
    NOT_STARTED: "The student has not started this formative yet.",
    ASSIGNMENT_NOT_LINKED: "The Canvas assignment no longer uses Formative (it was deleted or "
    "changed). Enter these grades in Canvas by hand, or link the assignment to Formative again.",
}

PREVIEW_READ_CONCURRENCY = 8
MAX_SELECTION = 10_000

JsonDecimal = Annotated[
    Decimal, PlainSerializer(lambda value: float(value), return_type=float, when_used="json")
]
"""Decimals are exact inside; JSON answers show them as numbers (8.33, not "8.33")."""


class ManualPassbackError(Exception):
    """A request this module refuses; the API turns it into a problem answer."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def not_your_formative(formative_id: str) -> ManualPassbackError:
    # The same answer whether or not the formative exists: nothing leaks about others' work.
    return ManualPassbackError(
        403, "not_a_teacher_of_formative", f"You are not a teacher of formative {formative_id!r}."
    )


async def authorize_teacher(
    session: AsyncSession, formative_id: str, teacher_id: str | None
) -> Formative:
    """The formative, if `teacher_id` is among its teachers; 403 otherwise."""
    formative = await store.get_formative(session, formative_id)
    if formative is None or teacher_id is None or teacher_id not in formative.teacher_ids:
        raise not_your_formative(formative_id)
    return formative


# --- Reading Canvas points ------------------------------------------------------------------


@dataclass(frozen=True)
class LineItemPoints:
    """What reading a line item told: its points, or why they are unknown.

    `problem` is None when `points` were read, `assignment_not_linked` when the line item is
    gone, or another stable failure code (the platform could not be asked or refused).
    """

    points: Decimal | None
    problem: str | None = None
    message: str | None = None


LineItemReader = Callable[[Platform, str], Awaitable[LineItemPoints]]
"""Reads one line item of one platform: (platform, line item URL) → its points."""


async def _read_each_line_item_once(
    reader: LineItemReader, wanted: Mapping[str, Platform]
) -> dict[str, LineItemPoints]:
    """Read every distinct line item URL once, a few at a time."""
    limit = asyncio.Semaphore(PREVIEW_READ_CONCURRENCY)

    async def read(lineitem_url: str, platform: Platform) -> tuple[str, LineItemPoints]:
        async with limit:
            return lineitem_url, await reader(platform, lineitem_url)

    pairs = await asyncio.gather(*(read(url, platform) for url, platform in wanted.items()))
    return dict(pairs)


# --- Who can be sent ------------------------------------------------------------------------


def unsendable_reason(entry: store.RosterEntry, platforms: Mapping[str, Platform]) -> str | None:
    """Why this student cannot be sent from what the service knows (None: sendable).

    Canvas is not asked here; a line item found gone is reported by the preview and, for a
    send, by the job's failure (`assignment_not_linked`).
    """
    launch = entry.launch
    if launch is None:
        return NOT_LAUNCHED_FROM_LMS
    if not launch.lineitem_url or SCORE_SCOPE not in launch.ags_scopes:
        return NOT_A_CANVAS_ASSIGNMENT
    platform = platforms.get(launch.platform_id)
    if platform is None or not platform.active:
        return PLATFORM_NOT_REGISTERED
    work = entry.work
    if work is None or not (work.started or work.submitted):
        return NOT_STARTED
    return None


def _complete(entry: store.RosterEntry) -> bool:
    return entry.work is not None and entry.work.submitted


# --- Preview --------------------------------------------------------------------------------


class LastPassback(BaseModel):
    """The newest passback job of a student on this formative."""

    job_id: int
    kind: JobKind
    status: JobStatus
    at: datetime = Field(description="When it finished, or was last changed if not finished.")
    score_given: JsonDecimal | None = Field(description="The Canvas score sent, once delivered.")
    canvas_points: JsonDecimal | None
    outcome_code: str | None

    @classmethod
    def of(cls, job: PassbackJob) -> LastPassback:
        return cls(
            job_id=job.id,
            kind=JobKind(job.kind),
            status=JobStatus(job.status),
            at=job.finished_at or job.updated_at,
            score_given=job.score_given,
            canvas_points=job.canvas_points,
            outcome_code=job.outcome_code,
        )


class PreviewRow(BaseModel):
    student_id: str
    student_name: str
    score: JsonDecimal | None = Field(description="The Formative score.")
    max_score: JsonDecimal | None = Field(description="The Formative maximum.")
    percent: JsonDecimal | None = Field(description="score ÷ maximum, in percent (2 places).")
    canvas_points: JsonDecimal | None = Field(
        description="The Canvas assignment's points (its line item's scoreMaximum), if read."
    )
    canvas_score: JsonDecimal | None = Field(
        description="The grade Canvas would show if sent now in this mode (sendable rows)."
    )
    submitted: bool
    complete: bool = Field(description="Complete/incomplete default: complete = submitted.")
    last_passback: LastPassback | None
    sendable: bool
    reason: str | None = Field(description="Why the row cannot be sent (a stable code).")
    reason_text: str | None = None


class PreviewClass(BaseModel):
    class_id: str
    course_title: str | None = Field(description="The Canvas course the class launched from.")
    rows: list[PreviewRow]


class PreviewWarning(BaseModel):
    code: str
    message: str
    lineitem_url: str
    student_ids: list[str]


class Preview(BaseModel):
    formative_id: str
    title: str
    mode: PassbackMode
    classes: list[PreviewClass]
    warnings: list[PreviewWarning]


def _line_item_warning(
    lineitem_url: str, read: LineItemPoints, student_ids: list[str]
) -> PreviewWarning | None:
    if read.problem == ASSIGNMENT_NOT_LINKED:
        return PreviewWarning(
            code=ASSIGNMENT_NOT_LINKED,
            message=SKIP_REASONS[ASSIGNMENT_NOT_LINKED],
            lineitem_url=lineitem_url,
            student_ids=student_ids,
        )
    if read.problem is not None:
        detail = f" ({read.message})" if read.message else ""
        return PreviewWarning(
            code=CANVAS_POINTS_UNAVAILABLE,
            message=f"Canvas could not be asked for the assignment's points: {read.problem}"
            f"{detail}. Grades can still be sent; they are computed from the points when "
            "they are delivered.",
            lineitem_url=lineitem_url,
            student_ids=student_ids,
        )
    if read.points is not None and read.points == 0:
        return PreviewWarning(
            code=CANVAS_POINTS_ZERO,
            message="The Canvas assignment is worth 0 points, so every grade sent becomes 0. "
            "Give the assignment points in Canvas first if that is not what you want.",
            lineitem_url=lineitem_url,
            student_ids=student_ids,
        )
    return None


def _grade_spec(mode: PassbackMode, entry: store.RosterEntry) -> GradeSpec:
    work = entry.work
    return GradeSpec(
        mode=GradeMode(mode),
        score=work.score if work else None,
        max_score=work.max_score if work else None,
        complete=_complete(entry) if mode is PassbackMode.complete_incomplete else None,
    )


async def build_preview(
    session: AsyncSession, formative: Formative, mode: PassbackMode, reader: LineItemReader
) -> Preview:
    entries = await store.roster(session, formative.id)
    launches = [entry.launch for entry in entries if entry.launch is not None]
    platforms = await store.platforms_by_id(session, {launch.platform_id for launch in launches})
    last_jobs = await store.latest_jobs_by_student(session, formative.id)

    reasons = {entry.student_id: unsendable_reason(entry, platforms) for entry in entries}
    # Read the line items of everyone who could be sent once the line item is known.
    wanted: dict[str, Platform] = {}
    for entry in entries:
        launch = entry.launch
        if (
            launch is not None
            and launch.lineitem_url
            and reasons[entry.student_id]
            in (
                None,
                NOT_STARTED,
            )
        ):
            wanted.setdefault(launch.lineitem_url, platforms[launch.platform_id])
    reads = await _read_each_line_item_once(reader, wanted)

    students_of_line_item: dict[str, list[str]] = {}
    classes: dict[str, PreviewClass] = {}
    for entry in entries:
        launch, work = entry.launch, entry.work
        lineitem_url = launch.lineitem_url if launch is not None else None
        read = reads.get(lineitem_url) if lineitem_url else None
        reason = reasons[entry.student_id]
        if lineitem_url and read is not None:
            students_of_line_item.setdefault(lineitem_url, []).append(entry.student_id)
            if reason is None and read.problem == ASSIGNMENT_NOT_LINKED:
                reason = ASSIGNMENT_NOT_LINKED
        canvas_points = read.points if read is not None else None
        canvas_score = None
        if reason is None and canvas_points is not None:
            canvas_score = score_to_send(_grade_spec(mode, entry), canvas_points).score_given
        score = work.score if work else None
        max_score = work.max_score if work else None
        last = last_jobs.get(entry.student_id)
        row = PreviewRow(
            student_id=entry.student_id,
            student_name=work.student_name if work else "",
            score=score,
            max_score=max_score,
            percent=percent(score, max_score)
            if score is not None and max_score is not None
            else None,
            canvas_points=canvas_points,
            canvas_score=canvas_score,
            submitted=work.submitted if work else False,
            complete=_complete(entry),
            last_passback=LastPassback.of(last) if last is not None else None,
            sendable=reason is None,
            reason=reason,
            reason_text=SKIP_REASONS.get(reason) if reason else None,
        )
        group = classes.get(entry.class_id)
        if group is None:
            group = classes[entry.class_id] = PreviewClass(
                class_id=entry.class_id, course_title=None, rows=[]
            )
        if group.course_title is None and launch is not None:
            group.course_title = launch.context_title
        group.rows.append(row)

    warnings = [
        warning
        for url, read in reads.items()
        if (warning := _line_item_warning(url, read, students_of_line_item.get(url, [])))
    ]
    return Preview(
        formative_id=formative.id,
        title=formative.title,
        mode=mode,
        classes=list(classes.values()),
        warnings=warnings,
    )


# --- Send -----------------------------------------------------------------------------------


class Override(BaseModel):
    """What to put in Canvas for one student instead of the Formative score: exactly one of
    a percent (may exceed 100 for extra credit), a Canvas score in points, or, in
    complete/incomplete mode, the student's complete status."""

    model_config = ConfigDict(extra="forbid")

    percent: Decimal | None = Field(default=None, ge=0, le=1000, decimal_places=4)
    points: Decimal | None = Field(default=None, ge=0, le=1_000_000, decimal_places=2)
    complete: bool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Override:
        given = [self.percent is not None, self.points is not None, self.complete is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of 'percent', 'points' or 'complete'")
        return self


class Selection(BaseModel):
    """Whole classes and/or single students, minus exclusions."""

    model_config = ConfigDict(extra="forbid")

    class_ids: list[str] = Field(default_factory=list, max_length=MAX_SELECTION)
    student_ids: list[str] = Field(default_factory=list, max_length=MAX_SELECTION)
    exclude_student_ids: list[str] = Field(default_factory=list, max_length=MAX_SELECTION)

    @model_validator(mode="after")
    def _something_selected(self) -> Selection:
        if not self.class_ids and not self.student_ids:
            raise ValueError("select at least one class or student")
        return self


class SendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: PassbackMode = PassbackMode.grades
    select: Selection
    overrides: dict[str, Override] = Field(
        default_factory=dict,
        description="Per student id. Applies only to selected students; changes only what "
        "goes to Canvas.",
    )
    comment: str | None = Field(
        default=None,
        max_length=5000,
        description="Sent with every grade of this batch; each becomes a new Canvas comment.",
    )

    @model_validator(mode="after")
    def _overrides_fit_mode(self) -> SendRequest:
        if self.mode is PassbackMode.grades:
            flips = sorted(sid for sid, o in self.overrides.items() if o.complete is not None)
            if flips:
                raise ValueError(
                    "'complete' overrides apply only in complete_incomplete mode "
                    f"(given for {', '.join(flips[:5])})"
                )
        return self

    def digest(self, acting_teacher_id: str) -> str:
        """Identifies the request's meaning (with who sends it) for Idempotency-Key checks."""
        canonical = json.dumps(
            {"teacher": acting_teacher_id, "request": self.model_dump(mode="json")},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


class QueuedStudent(BaseModel):
    student_id: str
    job_id: int


class SkippedStudent(BaseModel):
    student_id: str
    reason: str
    message: str


class SendAnswer(BaseModel):
    batch_id: str
    jobs: list[QueuedStudent]
    skipped: list[SkippedStudent]


@dataclass(frozen=True)
class Sender:
    teacher_id: str
    via: str
    """The caller's label: `teacher:<id>` or `key:<name>` (a passback key acting for them)."""


def _selected(entries: Sequence[store.RosterEntry], select: Selection) -> list[str]:
    """Student ids in a stable order: the selected classes' students, then named students."""
    excluded = set(select.exclude_student_ids)
    classes = set(select.class_ids)
    chosen: dict[str, None] = {}
    for entry in entries:
        if entry.class_id in classes:
            chosen[entry.student_id] = None
    for student_id in select.student_ids:
        chosen[student_id] = None
    return [student_id for student_id in chosen if student_id not in excluded]


def _new_job(
    entry: store.RosterEntry,
    request: SendRequest,
    *,
    batch_id: str,
    sender: Sender,
    now: datetime,
) -> NewJob:
    launch, work = entry.launch, entry.work
    assert launch is not None and launch.lineitem_url and work is not None
    override = request.overrides.get(entry.student_id)
    complete: bool | None = None
    if request.mode is PassbackMode.complete_incomplete:
        flipped = override.complete if override is not None else None
        complete = flipped if flipped is not None else work.submitted
    return NewJob(
        kind=JobKind.manual,
        platform_id=launch.platform_id,
        formative_id=launch.formative_id,
        student_id=entry.student_id,
        class_id=entry.class_id,
        lineitem_url=launch.lineitem_url,
        lti_user_id=launch.lti_user_id,
        score_timestamp=now,
        mode=request.mode,
        score=work.score,
        max_score=work.max_score,
        override_percent=override.percent if override is not None else None,
        override_points=override.points if override is not None else None,
        complete=complete,
        comment=request.comment or None,
        submitted_at=work.submitted_at,
        response_url=work.response_url,
        batch_id=batch_id,
        acting_teacher_id=sender.teacher_id,
    )


@dataclass(frozen=True)
class SendResult:
    answer: SendAnswer
    replayed: bool
    """True when an earlier request with the same Idempotency-Key gave this answer."""


def _replay(batch: Batch, digest: str) -> SendResult:
    if batch.request_digest != digest:
        raise ManualPassbackError(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was already used for a different request on this formative; "
            "use a new key for a new send.",
        )
    return SendResult(SendAnswer.model_validate_json(batch.response_body), replayed=True)


async def send(
    session: AsyncSession,
    formative: Formative,
    request: SendRequest,
    *,
    sender: Sender,
    idempotency_key: str | None,
    now: datetime,
    deadline: timedelta,
) -> SendResult:
    """Create a batch and one pending job per sendable selected student, committed together.

    With an Idempotency-Key seen before for this formative, answers what the first request
    answered (or refuses a different request under the same key). Without one, each send is
    new; older pending jobs of the same students are superseded by `enqueue_job`.
    """
    digest = request.digest(sender.teacher_id)
    if idempotency_key is not None:
        earlier = await store.find_batch_by_key(session, formative.id, idempotency_key)
        if earlier is not None:
            return _replay(earlier, digest)

    entries = {entry.student_id: entry for entry in await store.roster(session, formative.id)}
    platforms = await store.platforms_by_id(
        session,
        {entry.launch.platform_id for entry in entries.values() if entry.launch is not None},
    )
    batch = Batch(
        id=new_id(),
        formative_id=formative.id,
        mode=request.mode,
        sent_by_teacher_id=sender.teacher_id,
        sent_via=sender.via,
        idempotency_key=idempotency_key,
        request_digest=digest,
        created_at=now,
    )
    session.add(batch)
    queued: list[QueuedStudent] = []
    skipped: list[SkippedStudent] = []
    for student_id in _selected(list(entries.values()), request.select):
        entry = entries.get(student_id)
        reason = NOT_LAUNCHED_FROM_LMS if entry is None else unsendable_reason(entry, platforms)
        if reason is not None:
            skipped.append(
                SkippedStudent(student_id=student_id, reason=reason, message=SKIP_REASONS[reason])
            )
            continue
        assert entry is not None
        job = await enqueue_job(
            session,
            _new_job(entry, request, batch_id=batch.id, sender=sender, now=now),
            now=now,
            deadline=deadline,
        )
        queued.append(QueuedStudent(student_id=student_id, job_id=job.id))
    answer = SendAnswer(batch_id=batch.id, jobs=queued, skipped=skipped)
    batch.skipped = [item.model_dump() for item in skipped]
    batch.response_body = answer.model_dump_json()
    try:
        await session.commit()
    except IntegrityError:
        # Another request with the same key committed first: answer as it did.
        await session.rollback()
        if idempotency_key is None:
            raise
        earlier = await store.find_batch_by_key(session, formative.id, idempotency_key)
        if earlier is None:
            raise
        return _replay(earlier, digest)
    return SendResult(answer, replayed=False)


# --- Following a batch ----------------------------------------------------------------------

SKIPPED = "skipped"
STATUSES = (*(status.value for status in JobStatus), SKIPPED)


class BatchStudent(BaseModel):
    student_id: str
    class_id: str | None
    job_id: int | None
    status: str = Field(description="pending, in_flight, delivered, failed, superseded, skipped")
    reason: str | None = Field(description="A stable code: why it failed or was skipped.")
    message: str | None = Field(description="What the teacher should know or do.")
    platform_message: str | None = Field(description="The platform's own words, verbatim.")
    score_given: JsonDecimal | None
    canvas_points: JsonDecimal | None
    superseded_by: int | None
    updated_at: datetime | None


class BatchOut(BaseModel):
    batch_id: str
    formative_id: str
    mode: PassbackMode
    sent_by_teacher_id: str
    sent_via: str
    created_at: datetime
    done: bool = Field(description="True once no job of the batch is pending or in flight.")
    counts: dict[str, int]
    students: list[BatchStudent]


OutcomeText = Callable[[str], str | None]
"""Teacher-facing explanation of a failure code (None when there is none)."""


def _job_row(job: PassbackJob, explain: OutcomeText) -> BatchStudent:
    status = JobStatus(job.status)
    reason = job.outcome_code if status in (JobStatus.failed, JobStatus.superseded) else None
    message: str | None = None
    if status is JobStatus.superseded:
        reason = reason or "superseded"
        message = "A newer grade for this student was sent after this one; that one counts."
    elif reason is not None:
        message = explain(reason)
    return BatchStudent(
        student_id=job.student_id,
        class_id=job.class_id,
        job_id=job.id,
        status=status,
        reason=reason,
        message=message,
        platform_message=job.platform_message if status is JobStatus.failed else None,
        score_given=job.score_given,
        canvas_points=job.canvas_points,
        superseded_by=job.superseded_by,
        updated_at=job.finished_at or job.updated_at,
    )


async def batch_view(session: AsyncSession, batch: Batch, explain: OutcomeText) -> BatchOut:
    jobs = await store.batch_jobs(session, batch.id)
    students = [_job_row(job, explain) for job in jobs]
    students += [
        BatchStudent(
            student_id=item["student_id"],
            class_id=None,
            job_id=None,
            status=SKIPPED,
            reason=item["reason"],
            message=item.get("message") or SKIP_REASONS.get(item["reason"]),
            platform_message=None,
            score_given=None,
            canvas_points=None,
            superseded_by=None,
            updated_at=None,
        )
        for item in batch.skipped
    ]
    counted = Counter(student.status for student in students)
    return BatchOut(
        batch_id=batch.id,
        formative_id=batch.formative_id,
        mode=PassbackMode(batch.mode),
        sent_by_teacher_id=batch.sent_by_teacher_id,
        sent_via=batch.sent_via,
        created_at=batch.created_at,
        done=not (counted[JobStatus.pending] or counted[JobStatus.in_flight]),
        counts={status: counted[status] for status in STATUSES},
        students=students,
    )


# --- Operators: jobs ------------------------------------------------------------------------


class AttemptOut(BaseModel):
    started_at: datetime
    finished_at: datetime
    http_status: int | None
    outcome: str
    message: str | None = Field(description="The platform's answer or the error, verbatim.")

    @classmethod
    def of(cls, attempt: JobAttempt) -> AttemptOut:
        return cls(
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
            http_status=attempt.http_status,
            outcome=attempt.outcome,
            message=attempt.message,
        )


class JobOut(BaseModel):
    id: int
    kind: JobKind
    status: JobStatus
    formative_id: str
    student_id: str
    class_id: str
    batch_id: str | None
    event_id: str | None
    acting_teacher_id: str | None
    platform_id: str
    lineitem_url: str
    lti_user_id: str
    mode: PassbackMode
    score: JsonDecimal | None
    max_score: JsonDecimal | None
    override_percent: JsonDecimal | None
    override_points: JsonDecimal | None
    complete: bool | None
    has_comment: bool
    score_timestamp: datetime
    submitted_at: datetime | None
    new_submission: bool
    attempt_count: int
    next_attempt_at: datetime
    deadline_at: datetime
    outcome_code: str | None
    outcome_text: str | None = Field(description="The teacher-facing explanation of the code.")
    platform_message: str | None
    canvas_points: JsonDecimal | None
    score_given: JsonDecimal | None
    score_maximum: JsonDecimal | None
    superseded_by: int | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, job: PassbackJob, explain: OutcomeText) -> JobOut:
        return cls(
            id=job.id,
            kind=JobKind(job.kind),
            status=JobStatus(job.status),
            formative_id=job.formative_id,
            student_id=job.student_id,
            class_id=job.class_id,
            batch_id=job.batch_id,
            event_id=job.event_id,
            acting_teacher_id=job.acting_teacher_id,
            platform_id=job.platform_id,
            lineitem_url=job.lineitem_url,
            lti_user_id=job.lti_user_id,
            mode=PassbackMode(job.mode),
            score=job.score,
            max_score=job.max_score,
            override_percent=job.override_percent,
            override_points=job.override_points,
            complete=job.complete,
            has_comment=bool(job.comment),
            score_timestamp=job.score_timestamp,
            submitted_at=job.submitted_at,
            new_submission=job.new_submission,
            attempt_count=job.attempt_count,
            next_attempt_at=job.next_attempt_at,
            deadline_at=job.deadline_at,
            outcome_code=job.outcome_code,
            outcome_text=explain(job.outcome_code) if job.outcome_code else None,
            platform_message=job.platform_message,
            canvas_points=job.canvas_points,
            score_given=job.score_given,
            score_maximum=job.score_maximum,
            superseded_by=job.superseded_by,
            created_at=job.created_at,
            updated_at=job.updated_at,
            finished_at=job.finished_at,
        )


class JobDetail(JobOut):
    attempts: list[AttemptOut]


async def retry_job(
    session: AsyncSession, job_id: int, *, now: datetime, deadline: timedelta
) -> PassbackJob:
    """Put a failed job back in the queue for a new cycle of attempts, then commit.

    The same row is requeued (its attempts stay as history; its batch still shows it) with a
    fresh deadline and its original `score_timestamp`: the score still says "this is the grade
    as of then", so if a newer grade reached Canvas meanwhile, Canvas refuses the older one as
    stale and the job ends `superseded` instead of overwriting newer work. Only failed jobs
    with no newer job for the same student and line item can be retried: a superseded job
    lost to a newer one by design, and retrying an older job would send an outdated grade.
    """
    job = await store.get_job_for_update(session, job_id)
    if job is None:
        raise ManualPassbackError(404, "job_not_found", f"No job {job_id}.")
    if job.status != JobStatus.failed:
        raise ManualPassbackError(
            409,
            "job_not_retryable",
            f"Only failed jobs can be retried; job {job_id} is {job.status}.",
        )
    newer = await store.newer_job_of_pair(session, job)
    if newer is not None:
        raise ManualPassbackError(
            409,
            "newer_job_exists",
            f"Job {newer.id} is newer for the same student and assignment (it is {newer.status}); "
            "retrying this one would send an outdated grade. Send again instead.",
        )
    job.status = JobStatus.pending
    job.next_attempt_at = now
    job.deadline_at = now + deadline
    job.lease_owner = None
    job.lease_expires_at = None
    job.outcome_code = None
    job.platform_message = None
    job.finished_at = None
    job.updated_at = now
    await session.commit()
    return job


def encode_cursor(before_id: int) -> str:
    return _b64(json.dumps({"before": before_id}))


def decode_cursor(cursor: str) -> int:
    try:
        value: Any = json.loads(_unb64(cursor))
        before = value["before"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ManualPassbackError(
            422, "invalid_cursor", "The cursor is not one this API gave."
        ) from exc
    if not isinstance(before, int) or isinstance(before, bool) or before < 1:
        raise ManualPassbackError(422, "invalid_cursor", "The cursor is not one this API gave.")
    return before


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
