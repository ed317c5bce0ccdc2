"""The preview: each student's Formative score, the Canvas score a send would give, and
whether the row can be sent. Canvas points are read once per line item."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.context import AppContext
from app.grading.score import GradeMode, GradeSpec, percent, score_to_send
from app.lti.ags import AgsError
from app.lti.outcomes import FailureCode
from app.manual.common import (
    ASSIGNMENT_NOT_LINKED,
    CANVAS_POINTS_UNAVAILABLE,
    CANVAS_POINTS_ZERO,
    NOT_STARTED,
    JsonDecimal,
    explain,
    unsendable_reason,
)
from app.store import passback as store
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


def canvas_line_item_reader(context: AppContext) -> LineItemReader:
    """Reads points through the instance's AGS client, sharing its access tokens."""

    async def read(platform: Platform, lineitem_url: str) -> LineItemPoints:
        try:
            line_item = await context.ags.read_line_item(platform, lineitem_url)
        except AgsError as exc:
            return LineItemPoints(None, exc.code, exc.outcome.message)
        if line_item.points is None:
            return LineItemPoints(
                None, FailureCode.canvas_points_missing, "the line item has no scoreMaximum"
            )
        return LineItemPoints(line_item.points)

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
            message=explain(ASSIGNMENT_NOT_LINKED) or "",
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


def _row(
    entry: store.RosterEntry,
    mode: PassbackMode,
    reason: str | None,
    read: LineItemPoints | None,
    last: PassbackJob | None,
) -> PreviewRow:
    work = entry.work
    if reason is None and read is not None and read.problem == ASSIGNMENT_NOT_LINKED:
        reason = ASSIGNMENT_NOT_LINKED
    canvas_points = read.points if read is not None else None
    canvas_score = None
    if reason is None and canvas_points is not None:
        canvas_score = score_to_send(_grade_spec(mode, entry), canvas_points).score_given
    score = work.score if work else None
    max_score = work.max_score if work else None
    return PreviewRow(
        student_id=entry.student_id,
        student_name=work.student_name if work else "",
        score=score,
        max_score=max_score,
        percent=percent(score, max_score) if score is not None and max_score is not None else None,
        canvas_points=canvas_points,
        canvas_score=canvas_score,
        submitted=work.submitted if work else False,
        complete=_complete(entry),
        last_passback=LastPassback.of(last) if last is not None else None,
        sendable=reason is None,
        reason=reason,
        reason_text=explain(reason),
    )


async def build_preview(
    session: AsyncSession, formative: Formative, mode: PassbackMode, reader: LineItemReader
) -> Preview:
    """The preview of every student the service knows on the formative, grouped by class."""
    entries = await store.roster(session, formative.id)
    launches = [entry.launch for entry in entries if entry.launch is not None]
    platforms = await store.platforms_by_id(session, {launch.platform_id for launch in launches})
    last_jobs = await store.latest_jobs_by_student(session, formative.id)
    reasons = {entry.student_id: unsendable_reason(entry, platforms) for entry in entries}
    wanted = _line_items_to_read(entries, reasons, platforms)
    # Give the connection back before waiting on Canvas (nothing was written).
    await session.commit()
    reads = await _read_each_line_item_once(reader, wanted)

    students_of_line_item: dict[str, list[str]] = {}
    classes: dict[str, PreviewClass] = {}
    for entry in entries:
        launch = entry.launch
        lineitem_url = launch.lineitem_url if launch is not None else None
        read = reads.get(lineitem_url) if lineitem_url else None
        if lineitem_url and read is not None:
            students_of_line_item.setdefault(lineitem_url, []).append(entry.student_id)
        group = classes.setdefault(
            entry.class_id, PreviewClass(class_id=entry.class_id, course_title=None, rows=[])
        )
        if group.course_title is None and launch is not None:
            group.course_title = launch.context_title
        row = _row(entry, mode, reasons[entry.student_id], read, last_jobs.get(entry.student_id))
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
