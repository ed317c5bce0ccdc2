"""The read-only gradebook: what a teacher would see in Canvas, as JSON and as a small page."""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from app.sandbox.errors import NotFound
from app.sandbox.rendering import canvas_json
from app.sandbox.state import SandboxState
from app.sandbox.urls import request_origin
from app.sandbox.views import assignment_view, course_view, student_view, submission_view


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


def _cell(value: object) -> str:
    return "" if value is None else escape(str(value))


def render_gradebook_html(gradebook: dict[str, Any]) -> str:
    course = gradebook["course"]
    sections = []
    for assignment in gradebook["assignments"]:
        rows = []
        for cell in assignment["submissions"]:
            comments = "<br>".join(_cell(c["comment"]) for c in cell["comments"])
            url = cell["url"]
            link = f'<a href="{_cell(url)}">{_cell(url)}</a>' if url else ""
            rows.append(
                "<tr>"
                f"<td>{_cell(cell['name'])}</td><td><code>{_cell(cell['lti_id'])}</code></td>"
                f"<td>{_cell(cell['score'])}</td><td>{_cell(cell['grade'])}</td>"
                f"<td>{_cell(cell['attempt'])}</td><td>{_cell(cell['workflow_state'])}</td>"
                f"<td>{_cell(cell['submission_type'])}</td><td>{link}</td>"
                f"<td>{_cell(cell['submitted_at'])}</td><td>{_cell(cell['grader'])}</td>"
                f"<td>{comments}</td>"
                "</tr>"
            )
        deleted = " (deleted)" if assignment["deleted"] else ""
        sections.append(
            f"<h2>{_cell(assignment['name'])}{deleted} — "
            f"{_cell(assignment['points_possible'])} points</h2>"
            "<table><thead><tr><th>Student</th><th>LTI id</th><th>Score</th><th>Grade</th>"
            "<th>Attempts</th><th>State</th><th>Type</th><th>Submission</th>"
            "<th>Submitted</th><th>Grader</th><th>Comments</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Gradebook — {_cell(course['name'])}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head><body>"
        f"<h1>Gradebook — {_cell(course['name'])} ({_cell(course['state'])})</h1>"
        f"{''.join(sections) or '<p>No assignments.</p>'}</body></html>"
    )


def build_gradebook_router(state: SandboxState) -> APIRouter:
    router = APIRouter(prefix="/sandbox/gradebook", tags=["gradebook"])

    @router.get("/courses/{course_id}", summary="A course's gradebook as JSON")
    async def gradebook_json(request: Request, course_id: str) -> Response:
        return canvas_json(build_gradebook(state, course_id, request_origin(request)))

    @router.get("/courses/{course_id}/html", summary="A course's gradebook as a page")
    async def gradebook_html(request: Request, course_id: str) -> Response:
        gradebook = build_gradebook(state, course_id, request_origin(request))
        return HTMLResponse(render_gradebook_html(gradebook))

    return router
