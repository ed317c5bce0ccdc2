"""Sending: a batch and one job per sendable selected student, in one transaction, with
Idempotency-Key replay."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.manual.common import (
    LICENSE_REQUIRED,
    NOT_LAUNCHED_FROM_LMS,
    ManualPassbackError,
    explain,
    license_ok,
    unsendable_reason,
)
from app.store import passback as store
from app.store.jobs import NewJob, enqueue_job, lock_pairs, pair_key
from app.store.models import (
    Batch,
    Formative,
    JobKind,
    PassbackMode,
    new_id,
)

MAX_SELECTION = 10_000
MAX_TRIES = 3
"""Writes of a batch tried again after a deadlock."""
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock, serialization failure


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


class SendWarning(BaseModel):
    """Something about the queued grades the teacher should know (they were sent anyway)."""

    code: str
    message: str
    student_ids: list[str]


ABOVE_100_PERCENT = "above_100_percent"
POINTS_OVERRIDE = "points_override"
NOT_SUBMITTED = "not_submitted"
_SEND_WARNINGS = {
    ABOVE_100_PERCENT: "These grades are above 100 % of the Canvas points (extra credit).",
    POINTS_OVERRIDE: "These grades are Canvas points as typed: above the assignment's points "
    "they are extra credit, and on an assignment worth 0 points they become 0 (any "
    "percentage of zero is zero). The batch shows what Canvas received.",
    NOT_SUBMITTED: "These students have not submitted their work; their grade was sent anyway.",
}


class SendAnswer(BaseModel):
    batch_id: str
    jobs: list[QueuedStudent]
    skipped: list[SkippedStudent]
    warnings: list[SendWarning] = Field(
        default_factory=list,
        description="About queued grades: above 100 % (`above_100_percent`), points overrides "
        "(`points_override`: extra credit above the points, 0 on a 0-point assignment), "
        "students who have not submitted (`not_submitted`).",
    )


def _warnings(request: SendRequest, queued: Sequence[store.RosterEntry]) -> list[SendWarning]:
    found: dict[str, list[str]] = {code: [] for code in _SEND_WARNINGS}
    for entry in queued:
        override = request.overrides.get(entry.student_id)
        if override is not None and override.percent is not None and override.percent > 100:
            found[ABOVE_100_PERCENT].append(entry.student_id)
        if override is not None and override.points is not None:
            found[POINTS_OVERRIDE].append(entry.student_id)
        if entry.work is None or not entry.work.submitted:
            found[NOT_SUBMITTED].append(entry.student_id)
    return [
        SendWarning(code=code, message=_SEND_WARNINGS[code], student_ids=student_ids)
        for code, student_ids in found.items()
        if student_ids
    ]


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


async def _write_batch(
    session: AsyncSession,
    formative: Formative,
    request: SendRequest,
    *,
    sender: Sender,
    idempotency_key: str | None,
    digest: str,
    now: datetime,
    deadline: timedelta,
) -> SendAnswer:
    """The batch and its jobs, committed together."""
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
    await session.flush()  # a concurrent send with the same key conflicts here, before any job
    licensed = license_ok(formative)
    sendable: list[store.RosterEntry] = []
    skipped: list[SkippedStudent] = []
    for student_id in _selected(list(entries.values()), request.select):
        entry = entries.get(student_id)
        if entry is None:
            reason: str | None = LICENSE_REQUIRED if not licensed else NOT_LAUNCHED_FROM_LMS
        else:
            reason = unsendable_reason(entry, platforms, licensed=licensed)
        if reason is not None:
            skipped.append(
                SkippedStudent(student_id=student_id, reason=reason, message=explain(reason) or "")
            )
        else:
            assert entry is not None
            sendable.append(entry)
    # Concurrent sends of the same students queue one after the other: each supersedes the
    # pending jobs the one before it committed, and its timestamps follow that one's.
    await lock_pairs(
        session,
        [
            pair_key(entry.launch.lineitem_url, entry.launch.lti_user_id)
            for entry in sendable
            if entry.launch is not None and entry.launch.lineitem_url
        ],
    )
    queued: list[QueuedStudent] = []
    for entry in sendable:
        student_id = entry.student_id
        job = await enqueue_job(
            session,
            _new_job(entry, request, batch_id=batch.id, sender=sender, now=now),
            now=now,
            deadline=deadline,
        )
        queued.append(QueuedStudent(student_id=student_id, job_id=job.id))
    answer = SendAnswer(
        batch_id=batch.id, jobs=queued, skipped=skipped, warnings=_warnings(request, sendable)
    )
    batch.skipped = [item.model_dump() for item in skipped]
    batch.response_body = answer.model_dump_json()
    await session.commit()
    return answer


async def _reloaded(session: AsyncSession, formative_id: str) -> Formative:
    formative = await store.get_formative(session, formative_id)
    if formative is None:  # pragma: no cover - formatives are never deleted
        raise ManualPassbackError(404, "formative_not_found", f"No formative {formative_id!r}.")
    return formative


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
    formative_id = formative.id  # a rollback below expires the loaded formative
    if idempotency_key is not None:
        earlier = await store.find_batch_by_key(session, formative_id, idempotency_key)
        if earlier is not None:
            return _replay(earlier, digest)

    try:
        for tries_left in reversed(range(MAX_TRIES)):
            try:
                answer = await _write_batch(
                    session,
                    formative,
                    request,
                    sender=sender,
                    idempotency_key=idempotency_key,
                    digest=digest,
                    now=now,
                    deadline=deadline,
                )
                break
            except DBAPIError as error:
                if isinstance(error, IntegrityError) or not tries_left:
                    raise
                if getattr(error.orig, "sqlstate", None) not in _TRANSIENT_SQLSTATES:
                    raise
                # A deadlock with the delivery engine or the intake (rows of the same pairs
                # taken in another order): nothing was written; write the batch again.
                await session.rollback()
                formative = await _reloaded(session, formative_id)
    except IntegrityError:
        # A request with the same key wrote its batch first: answer as it did.
        await session.rollback()
        if idempotency_key is None:
            raise
        earlier = await store.find_batch_by_key(session, formative_id, idempotency_key)
        if earlier is None:
            raise
        return _replay(earlier, digest)
    return SendResult(answer, replayed=False)
