"""The read-only gradebook: what a teacher would see in Canvas, as JSON and as pages.

The pages are Jinja2 templates (autoescaped) under `app/sandbox/templates`, styled by
`app/sandbox/static`: an index of courses at `/`, and each course's grid of students ×
assignments, laid out as Canvas's gradebook is. The JSON keeps exact decimal strings and ISO
times for tests; the pages show rounded scores and times as people read them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from app.sandbox.errors import NotFound
from app.sandbox.models import Assignment, Course, Enrollment, EnrollmentState, Submission, User
from app.sandbox.rendering import canvas_json, decimal_text
from app.sandbox.state import SandboxState
from app.sandbox.urls import request_origin
from app.sandbox.views import assignment_view, course_view, student_view, submission_view

HERE = Path(__file__).resolve().parent
STATIC_PATH = "/sandbox/static"
CENT = Decimal("0.01")

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
)


def readable_time(moment: datetime | None) -> str:
    """``20 Nov 2026, 14:03 UTC``: a time as a person reads it (the ISO form goes in
    ``<time datetime>``)."""
    if moment is None:
        return ""
    utc = moment.astimezone(UTC)
    return f"{utc.day} {utc:%b %Y, %H:%M} UTC"


def readable_number(value: Decimal) -> str:
    """A score as the gradebook shows it: to the cent, without trailing zeros."""
    return decimal_text(value.quantize(CENT, ROUND_HALF_UP))


templates.env.filters["when"] = readable_time
templates.env.filters["number"] = readable_number
templates.env.filters["iso"] = lambda moment: moment.isoformat() if moment else ""


def build_gradebook(state: SandboxState, course_id: str, origin: str) -> dict[str, Any]:
    """Every assignment of a course with one cell per enrolled student."""
    with state.lock:
        course = state.courses.get(course_id)
        if course is None:
            raise NotFound()
        students = state.students_of(course_id)
        assignments = []
        for assignment in state.assignments.values():
            if assignment.course_id != course_id:
                continue
            view = assignment_view(state, assignment, origin)
            view["submissions"] = [
                {
                    **student_view(user, enrollment),
                    **submission_view(state.submissions.get((assignment.id, user.id))),
                }
                for user, enrollment in students
            ]
            assignments.append(view)
        return {
            "course": course_view(course, origin),
            "students": [student_view(user, enrollment) for user, enrollment in students],
            "assignments": assignments,
        }


# --- The pages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradeCell:
    """One student's grade on one assignment, as the grid shows it."""

    submission: Submission | None
    points_possible: Decimal

    @property
    def score(self) -> Decimal | None:
        return self.submission.score if self.submission is not None else None

    @property
    def above_points_possible(self) -> bool:
        """Canvas allows it (extra credit) but flags it; so does the grid."""
        return self.score is not None and self.score > self.points_possible

    @property
    def link(self) -> str | None:
        """The submission's URL when a browser may follow it (http or https only: a tool's
        `submission_data` is not trusted to be a harmless link)."""
        url = self.submission.url if self.submission is not None else None
        return url if url is not None and url.startswith(("https://", "http://")) else None

    @property
    def graded_by_tool(self) -> bool:
        grader = self.submission.grader if self.submission is not None else None
        return grader is not None and grader.startswith("tool:")


@dataclass(frozen=True)
class StudentLine:
    user: User
    enrollment: Enrollment
    cells: list[GradeCell]

    @property
    def enrollment_note(self) -> str | None:
        state = self.enrollment.state
        return None if state is EnrollmentState.ACTIVE else state.value


@dataclass(frozen=True)
class CourseGrid:
    course: Course
    assignments: list[Assignment]
    students: list[StudentLine]


def _copy(submission: Submission | None) -> Submission | None:
    """A snapshot taken under the lock, so the page renders without holding it."""
    if submission is None:
        return None
    return replace(submission, comments=list(submission.comments), history=[])


def course_grid(state: SandboxState, course_id: str) -> CourseGrid:
    with state.lock:
        course = state.courses.get(course_id)
        if course is None:
            raise NotFound()
        assignments = [a for a in state.assignments.values() if a.course_id == course_id]
        lines = [
            StudentLine(
                user=user,
                enrollment=enrollment,
                cells=[
                    GradeCell(
                        _copy(state.submissions.get((assignment.id, user.id))),
                        assignment.points_possible,
                    )
                    for assignment in assignments
                ],
            )
            for user, enrollment in state.students_of(course_id)
        ]
        return CourseGrid(course, assignments, lines)


@dataclass(frozen=True)
class CourseSummary:
    course: Course
    students: int
    assignments: int


def course_index(state: SandboxState) -> list[CourseSummary]:
    with state.lock:
        return [
            CourseSummary(
                course,
                students=len(state.students_of(course.id)),
                assignments=sum(1 for a in state.assignments.values() if a.course_id == course.id),
            )
            for course in state.courses.values()
        ]


def build_gradebook_router(state: SandboxState) -> APIRouter:
    router = APIRouter(tags=["gradebook"])

    @router.get("/", summary="Every course, linking its gradebook", response_class=HTMLResponse)
    async def index(request: Request) -> Response:
        return templates.TemplateResponse(
            request, "index.html", {"courses": course_index(state), "static": STATIC_PATH}
        )

    @router.get("/sandbox/gradebook/courses/{course_id}", summary="A course's gradebook as JSON")
    async def gradebook_json(request: Request, course_id: str) -> Response:
        return canvas_json(build_gradebook(state, course_id, request_origin(request)))

    @router.get(
        "/sandbox/gradebook/courses/{course_id}/html",
        summary="A course's gradebook as a page",
        response_class=HTMLResponse,
    )
    async def gradebook_html(request: Request, course_id: str) -> Response:
        grid = course_grid(state, course_id)
        return templates.TemplateResponse(
            request, "gradebook.html", {"grid": grid, "static": STATIC_PATH}
        )

    return router


def gradebook_assets() -> StaticFiles:
    """The pages' stylesheet; mount it at `STATIC_PATH`."""
    return StaticFiles(directory=HERE / "static")
