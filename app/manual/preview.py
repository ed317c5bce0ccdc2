"""The preview: each student's Formative score, the Canvas score a send would give, what
Canvas holds now, and whether the row can be sent (SPEC §2.2).

Canvas is asked once per line item: its points (the line item), then every student's grade
(the Results service, one paged read). Nothing is written; the database connection is given
back before Canvas is asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.context import AppContext
from app.grading.score import (
    GradeMode,
    GradeSpec,
    canvas_grade_of_result,
    percent,
    score_to_send,
)
from app.lti.ags import AgsError
from app.lti.ags_documents import Result
from app.lti.outcomes import FailureCode
from app.manual.common import (
    ASSIGNMENT_NOT_LINKED,
    CANVAS_POINTS_UNAVAILABLE,
    CANVAS_POINTS_ZERO,
    NOT_STARTED,
    JsonDecimal,
    explain,
    license_ok,
    unsendable_reason,
)
from app.store import passback as store
from app.store.jobs import pair_key
from app.store.models import (
    Formative,
    JobKind,
    JobStatus,
    PassbackJob,
    PassbackMode,
    Platform,
)

PREVIEW_READ_CONCURRENCY = 8
PREVIEW_READ_SECONDS = 10.0
"""A preview waits this long for a line item; past it the points show as unavailable."""

REFUSALS = frozenset(code.value for code in FailureCode) - {
    FailureCode.platform_unavailable.value,
    FailureCode.canvas_points_missing.value,
}
"""Failure codes of a line item read that mean the platform refuses the class's grades (the
others: Canvas could not be asked in time, or the assignment has no points)."""


def is_refusal(code: str | None) -> bool:
    """A line item read that failed for good: grades sent there would fail the same way."""
    return code in REFUSALS


# --- Reading Canvas -------------------------------------------------------------------------


@dataclass(frozen=True)
class LineItemPoints:
    """What reading a line item told: its points, or why they are unknown; and the grades
    Canvas holds on it (by LTI user id), or why they are unknown.

    `problem` is None when `points` were read, `assignment_not_linked` when the line item is
    gone, or another stable failure code (the platform could not be asked or refused).
    `grades` is None when the Results service was not read or could not be
    (`grades_problem` says why: `scope_not_granted` when the key lacks result.readonly).
    """

    points: Decimal | None
    problem: str | None = None
    message: str | None = None
    grades: Mapping[str, Result] | None = None
    grades_problem: str | None = None


LineItemReader = Callable[[Platform, str], Awaitable[LineItemPoints]]
"""Reads one line item of one platform: (platform, line item URL) → its points and grades."""


def canvas_line_item_reader(context: AppContext) -> LineItemReader:
    """Reads points and results through the instance's AGS client, sharing its tokens."""

    async def read(platform: Platform, lineitem_url: str) -> LineItemPoints:
        try:
            line_item = await context.ags.read_line_item(platform, lineitem_url)
        except AgsError as exc:
            return LineItemPoints(None, exc.code, exc.outcome.message)
        if line_item.points is None:
            return LineItemPoints(
                None, FailureCode.canvas_points_missing, "the line item has no scoreMaximum"
            )
        try:
            results = await context.ags.read_results(platform, lineitem_url)
        except AgsError as exc:
            return LineItemPoints(line_item.points, grades_problem=exc.code)
        grades = {result.user_id: result for result in results}
        return LineItemPoints(line_item.points, grades=grades)

    return read


async def _read_each_line_item_once(
    reader: LineItemReader, wanted: Mapping[str, Platform]
) -> dict[str, LineItemPoints]:
    """Read every distinct line item URL once, a few at a time."""
    limit = asyncio.Semaphore(PREVIEW_READ_CONCURRENCY)

    async def read(lineitem_url: str, platform: Platform) -> tuple[str, LineItemPoints]:
        async with limit:
            try:
                async with asyncio.timeout(PREVIEW_READ_SECONDS):
                    return lineitem_url, await reader(platform, lineitem_url)
            except TimeoutError:
                late = f"no answer within {PREVIEW_READ_SECONDS:g} s"
                return lineitem_url, LineItemPoints(None, FailureCode.platform_unavailable, late)

    pairs = await asyncio.gather(*(read(url, platform) for url, platform in wanted.items()))
    return dict(pairs)


def _complete(entry: store.RosterEntry) -> bool:
    """Complete/incomplete's default: complete when the work was submitted."""
    return entry.work is not None and entry.work.submitted


# --- Preview --------------------------------------------------------------------------------


class CanvasNowState(StrEnum):
    read = "read"
    """Canvas's grade was read back (`canvas_now`)."""
    none = "none"
    """Canvas holds no grade for the student."""
    unknown = "unknown"
    """The grade could not be read (the platform does not allow it, or the read failed)."""


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
    student_name: str | None = Field(
        description="From events or PUT /v1/formatives/{id}; None when unknown (never the id)."
    )
    launched: bool = Field(description="The student opened the formative from Canvas.")
    score: JsonDecimal | None = Field(description="The Formative score.")
    max_score: JsonDecimal | None = Field(description="The Formative maximum.")
    percent: JsonDecimal | None = Field(description="score ÷ maximum, in percent (2 places).")
    canvas_points: JsonDecimal | None = Field(
        description="The Canvas assignment's points (its line item's scoreMaximum), if read."
    )
    canvas_score: JsonDecimal | None = Field(
        description="The grade Canvas would show if sent now in this mode without overrides "
        "(sendable rows whose points were read)."
    )
    canvas_now: JsonDecimal | None = Field(
        description="The grade Canvas holds now, in the assignment's points (read back)."
    )
    canvas_now_state: CanvasNowState
    last_delivered: JsonDecimal | None = Field(
        description="The grade (Canvas points) of the last job of this service delivered to "
        "this student's Canvas assignment."
    )
    changed_in_canvas: bool = Field(
        description="Canvas's grade was read and differs from the last one delivered: "
        "changed in Canvas by hand."
    )
    would_change: bool = Field(
        description="Sendable, and sending it now would change Canvas's grade (it differs "
        "from canvas_now; or Canvas's grade is unknown or absent and this value was never "
        "delivered)."
    )
    default_selected: bool = Field(
        description="Selected by default: would_change, not an unsubmitted student in grades "
        "mode, and not in a class whose Canvas assignment the platform refuses."
    )
    submitted: bool
    complete: bool = Field(description="Complete/incomplete default: complete = submitted.")
    last_passback: LastPassback | None
    sendable: bool
    reason: str | None = Field(description="Why the row cannot be sent (a stable code).")
    reason_text: str | None = None


class Refusal(BaseModel):
    """Why the platform refuses the class's grades, once for the class."""

    code: str
    message: str = Field(description="What the teacher reads: what happened and what to do.")


class PreviewLineItem(BaseModel):
    """A Canvas assignment (line item) the class's students launched from."""

    lineitem_url: str
    canvas_points: JsonDecimal | None
    problem_code: str | None = Field(description="Why the points are unknown (a stable code).")
    problem_message: str | None = Field(description="The platform's own words, verbatim.")


class PreviewClass(BaseModel):
    class_id: str
    class_name: str | None = Field(description="From PUT /v1/formatives/{id}; None if unknown.")
    course_title: str | None = Field(description="The Canvas course the class launched from.")
    refusal: Refusal | None = Field(
        description="Set when the platform refuses the class's Canvas assignment (course "
        "concluded, key inactive, …): a send to it would fail."
    )
    lineitems: list[PreviewLineItem]
    rows: list[PreviewRow]


class PreviewWarning(BaseModel):
    code: str
    message: str
    lineitem_url: str
    class_id: str | None = Field(default=None, description="The class concerned, if one.")
    student_ids: list[str]


class Preview(BaseModel):
    formative_id: str
    title: str
    mode: PassbackMode
    activity: bool = Field(
        description="False while no student has launched or worked: nothing to send yet."
    )
    license_ok: bool = Field(description="The organization has a School & District license.")
    classes: list[PreviewClass]
    warnings: list[PreviewWarning]


def _line_item_warning(
    lineitem_url: str, read: LineItemPoints, student_ids: list[str], class_id: str | None
) -> PreviewWarning | None:
    def warning(code: str, message: str) -> PreviewWarning:
        return PreviewWarning(
            code=code,
            message=message,
            lineitem_url=lineitem_url,
            class_id=class_id,
            student_ids=student_ids,
        )

    if is_refusal(read.problem):
        assert read.problem is not None
        return warning(read.problem, explain(read.problem) or read.message or read.problem)
    if read.problem is not None:
        detail = f" ({read.message})" if read.message else ""
        return warning(
            CANVAS_POINTS_UNAVAILABLE,
            f"Canvas could not be asked for the assignment's points: {read.problem}"
            f"{detail}. Grades can still be sent; they are computed from the points when "
            "they are delivered.",
        )
    if read.points is not None and read.points == 0:
        return warning(
            CANVAS_POINTS_ZERO,
            "The Canvas assignment is worth 0 points, so every grade sent becomes 0 (points "
            "overrides too). Give the assignment points in Canvas first if that is not what "
            "you want.",
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


def _line_items_to_read(
    entries: Sequence[store.RosterEntry],
    reasons: Mapping[str, str | None],
    platforms: Mapping[str, Platform],
) -> dict[str, Platform]:
    """Each line item of a student who is sendable, or will be once they start."""
    wanted: dict[str, Platform] = {}
    for entry in entries:
        launch = entry.launch
        if launch is None or not launch.lineitem_url:
            continue
        if reasons[entry.student_id] in (None, NOT_STARTED):
            wanted.setdefault(launch.lineitem_url, platforms[launch.platform_id])
    return wanted


@dataclass(frozen=True)
class _CanvasNow:
    value: Decimal | None
    state: CanvasNowState


def _canvas_now(entry: store.RosterEntry, read: LineItemPoints | None) -> _CanvasNow:
    launch = entry.launch
    if launch is None or read is None or read.grades is None or read.points is None:
        return _CanvasNow(None, CanvasNowState.unknown)
    result = read.grades.get(launch.lti_user_id)
    if result is None or result.score is None:
        return _CanvasNow(None, CanvasNowState.none)
    grade = canvas_grade_of_result(result.score, result.maximum, read.points)
    return _CanvasNow(grade, CanvasNowState.read)


@dataclass
class _RowFacts:
    """What a row is built from, besides the student's entry."""

    mode: PassbackMode
    reason: str | None
    read: LineItemPoints | None
    last: PassbackJob | None
    delivered: PassbackJob | None
    refused: bool = False


def _row(entry: store.RosterEntry, facts: _RowFacts) -> PreviewRow:
    work, read, mode = entry.work, facts.read, facts.mode
    reason = facts.reason
    if reason is None and read is not None and read.problem == ASSIGNMENT_NOT_LINKED:
        reason = ASSIGNMENT_NOT_LINKED
    sendable = reason is None
    canvas_points = read.points if read is not None else None
    canvas_score = None
    if sendable and canvas_points is not None:
        canvas_score = score_to_send(_grade_spec(mode, entry), canvas_points).score_given
    now = _canvas_now(entry, read)
    last_delivered = facts.delivered.score_given if facts.delivered is not None else None
    changed_in_canvas = (
        now.state is CanvasNowState.read
        and last_delivered is not None
        and now.value != last_delivered
    )
    if not sendable:
        would_change = False
    elif now.state is CanvasNowState.read:
        would_change = canvas_score is None or canvas_score != now.value
    else:
        would_change = last_delivered is None or (
            canvas_score is not None and canvas_score != last_delivered
        )
    submitted = work.submitted if work else False
    score = work.score if work else None
    max_score = work.max_score if work else None
    return PreviewRow(
        student_id=entry.student_id,
        student_name=entry.name,
        launched=entry.launch is not None,
        score=score,
        max_score=max_score,
        percent=percent(score, max_score) if score is not None and max_score is not None else None,
        canvas_points=canvas_points,
        canvas_score=canvas_score,
        canvas_now=now.value,
        canvas_now_state=now.state,
        last_delivered=last_delivered,
        changed_in_canvas=changed_in_canvas,
        would_change=would_change,
        default_selected=(
            would_change
            and not facts.refused
            and not (mode is PassbackMode.grades and not submitted)
        ),
        submitted=submitted,
        complete=_complete(entry),
        last_passback=LastPassback.of(facts.last) if facts.last is not None else None,
        sendable=sendable,
        reason=reason,
        reason_text=explain(reason),
    )


def _pair_of(entry: store.RosterEntry) -> str | None:
    launch = entry.launch
    if launch is None or not launch.lineitem_url:
        return None
    return pair_key(launch.lineitem_url, launch.lti_user_id)


async def build_preview(
    session: AsyncSession, formative: Formative, mode: PassbackMode, reader: LineItemReader
) -> Preview:
    """The preview of every student the service knows on the formative, grouped by class."""
    entries = await store.roster(session, formative.id)
    class_names = await store.class_names(session, formative.id)
    launches = [entry.launch for entry in entries if entry.launch is not None]
    platforms = await store.platforms_by_id(session, {launch.platform_id for launch in launches})
    last_jobs = await store.latest_jobs_by_student(session, formative.id)
    pairs = {entry.student_id: _pair_of(entry) for entry in entries}
    delivered = await store.last_delivered_by_pair(
        session, {key for key in pairs.values() if key is not None}
    )
    licensed = license_ok(formative)
    reasons = {
        entry.student_id: unsendable_reason(entry, platforms, licensed=licensed)
        for entry in entries
    }
    wanted = _line_items_to_read(entries, reasons, platforms) if licensed else {}
    # Give the connection back before waiting on Canvas (nothing was written).
    await session.commit()
    reads = await _read_each_line_item_once(reader, wanted)

    students_of_line_item: dict[str, list[str]] = {}
    classes_of_line_item: dict[str, set[str]] = {}
    classes: dict[str, PreviewClass] = {
        class_id: PreviewClass(
            class_id=class_id,
            class_name=name,
            course_title=None,
            refusal=None,
            lineitems=[],
            rows=[],
        )
        for class_id, name in sorted(class_names.items())
    }
    for entry in entries:
        launch = entry.launch
        lineitem_url = launch.lineitem_url if launch is not None else None
        read = reads.get(lineitem_url) if lineitem_url else None
        group = classes.setdefault(
            entry.class_id,
            PreviewClass(
                class_id=entry.class_id,
                class_name=class_names.get(entry.class_id),
                course_title=None,
                refusal=None,
                lineitems=[],
                rows=[],
            ),
        )
        if lineitem_url and read is not None:
            students_of_line_item.setdefault(lineitem_url, []).append(entry.student_id)
            classes_of_line_item.setdefault(lineitem_url, set()).add(entry.class_id)
            if all(item.lineitem_url != lineitem_url for item in group.lineitems):
                group.lineitems.append(
                    PreviewLineItem(
                        lineitem_url=lineitem_url,
                        canvas_points=read.points,
                        problem_code=read.problem,
                        problem_message=read.message,
                    )
                )
            if group.refusal is None and is_refusal(read.problem):
                assert read.problem is not None
                group.refusal = Refusal(
                    code=read.problem, message=explain(read.problem) or read.problem
                )
        if group.course_title is None and launch is not None:
            group.course_title = launch.context_title
        pair = pairs[entry.student_id]
        facts = _RowFacts(
            mode=mode,
            reason=reasons[entry.student_id],
            read=read,
            last=last_jobs.get(entry.student_id),
            delivered=delivered.get(pair) if pair is not None else None,
            refused=read is not None and is_refusal(read.problem),
        )
        group.rows.append(_row(entry, facts))

    warnings = []
    for url, read in reads.items():
        concerned = classes_of_line_item.get(url, set())
        class_id = next(iter(concerned)) if len(concerned) == 1 else None
        warning = _line_item_warning(url, read, students_of_line_item.get(url, []), class_id)
        if warning is not None:
            warnings.append(warning)
    return Preview(
        formative_id=formative.id,
        title=formative.title,
        mode=mode,
        activity=any(entry.launch is not None or entry.work is not None for entry in entries),
        license_ok=licensed,
        classes=sorted(classes.values(), key=lambda group: group.class_id),
        warnings=warnings,
    )
