"""`passback demo`: pass grades end to end against a running service and its sandbox Canvas.

What a newcomer would do by hand: a Canvas course with the tool, students launching the
formative from the Canvas assignment, Formative reporting their submissions, and the grades
appearing in the gradebook. It can be run again and again, also after the service and its
sandbox were restarted (the sandbox then forgets its developer keys and courses, while the
service's database keeps the old registration: the demo brings that registration up to date).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

DEMO_SCORES = (("Ada Lovelace", 7, 10), ("Grace Hopper", 9, 10), ("Alan Turing", 5, 8))
DEMO_TEACHER_ID = "demo-teacher"
FINAL_STATUSES = {"delivered", "failed", "superseded"}


class ServiceAnswerError(Exception):
    """The service or the sandbox refused a request of the demo: one line says which and why."""

    def __init__(self, response: httpx.Response, who: str) -> None:
        request = response.request
        try:
            body = response.json()
        except ValueError:
            body = None
        code = body.get("code", "") if isinstance(body, dict) else ""
        detail = (
            str(body.get("detail") or body.get("title") or "")
            if isinstance(body, dict)
            else response.text[:200]
        )
        line = (
            f"{who} answered {response.status_code} {code} to {request.method} {request.url.path}"
        )
        if detail:
            line += f": {detail}"
        if response.status_code == 401 and who == "the service":
            line += " (is --api-key the key of the running service? default: var/dev-api-key)"
        super().__init__(line)
        self.status_code = response.status_code
        self.code = code


@dataclass(frozen=True)
class DemoResult:
    student: str
    percent: str
    job_status: str
    canvas_score: str | None


@dataclass(frozen=True)
class DemoRun:
    """What one demo made: its course in the sandbox, its formative, and each student's grade."""

    results: list[DemoResult]
    course_id: str
    gradebook_url: str
    formative_id: str
    teacher_id: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _checked(response: httpx.Response, who: str = "the service") -> Any:
    if response.status_code >= 400:
        raise ServiceAnswerError(response, who)
    return response.json()


def _sandbox_checked(response: httpx.Response) -> Any:
    return _checked(response, "the sandbox Canvas")


async def _register(api: httpx.AsyncClient, world: dict[str, Any], sandbox_host: str) -> None:
    """Register the sandbox's new developer key, or bring an older registration with the same
    issuer and client id up to date: a restarted sandbox hands out its client ids again, with
    new deployments, while the service's database remembers the old ones."""
    registration = {
        "issuer": world["issuer"],
        "client_id": world["client_id"],
        "deployment_ids": [world["deployment_id"]],
        "token_url": world["token_url"],
        "jwks_url": world["jwks_url"],
        "allowed_hosts": [sandbox_host],
        "label": "Sandbox Canvas (demo)",
    }
    response = await api.post("/v1/platforms", json=registration)
    if response.status_code != 409:
        _checked(response)
        return
    platforms = _checked(await api.get("/v1/platforms"))
    existing = next(
        platform
        for platform in platforms
        if (platform["issuer"], platform["client_id"]) == (world["issuer"], world["client_id"])
    )
    deployments = [*existing["deployment_ids"], world["deployment_id"]]
    hosts = [*existing["allowed_hosts"], sandbox_host]
    _checked(
        await api.patch(
            f"/v1/platforms/{existing['id']}",
            json={
                "deployment_ids": list(dict.fromkeys(deployments)),
                "token_url": world["token_url"],
                "token_audience": None,
                "jwks_url": world["jwks_url"],
                "allowed_hosts": list(dict.fromkeys(hosts)),
                "active": True,
            },
        )
    )


def _event(formative_id: str, student_id: str, score: int, max_score: int) -> dict[str, Any]:
    now = _now()
    return {
        "event_id": f"demo-{uuid.uuid4().hex}",
        "type": "submitted",
        "occurred_at": now,
        "organization": {"id": "demo-org", "license": "school_district"},
        "formative": {
            "id": formative_id,
            "title": "Fractions quiz",
            "auto_passback": True,
            "teacher_ids": [DEMO_TEACHER_ID],
            "questions": [{"id": "q1", "points": max_score, "grading": "auto"}],
        },
        "student": {"id": student_id, "class_id": "demo-class", "name": student_id},
        "attempt": 1,
        "submitted_by": "student",
        "submitted_at": now,
        "score": score,
        "max_score": max_score,
        "response_url": f"https://formative.example/r/{student_id}",
    }


async def _wait_for_job(api: httpx.AsyncClient, job_id: int, wait_seconds: float) -> str:
    deadline = asyncio.get_running_loop().time() + wait_seconds
    status = "pending"
    while asyncio.get_running_loop().time() < deadline:
        status = str(_checked(await api.get(f"/v1/passback/jobs/{job_id}"))["status"])
        if status in FINAL_STATUSES:
            break
        await asyncio.sleep(0.2)
    return status


async def run_demo(
    api_url: str,
    sandbox_url: str,
    api_key: str,
    *,
    wait_seconds: float = 30.0,
    on_result: Callable[[DemoResult], None] | None = None,
) -> DemoRun:
    headers = {"Authorization": f"Bearer {api_key}"}
    async with (
        httpx.AsyncClient(base_url=api_url, headers=headers, timeout=10) as api,
        httpx.AsyncClient(base_url=sandbox_url, timeout=10) as sandbox,
    ):
        # The service first: a wrong key or a stopped service is said before anything is made.
        _checked(await api.get("/v1/platforms"))
        world = _sandbox_checked(
            await sandbox.post(
                "/sandbox/admin/scenario",
                json={
                    "tool_jwks_url": f"{api_url}/.well-known/jwks.json",
                    "points": 10,
                    "students": [name for name, _, _ in DEMO_SCORES],
                    "course_name": "Demo course",
                },
            )
        )
        await _register(api, world, httpx.URL(sandbox_url).host)
        formative_id = f"demo-{uuid.uuid4().hex[:8]}"
        results: list[DemoResult] = []
        for student, (name, score, max_score) in zip(world["students"], DEMO_SCORES, strict=True):
            launch = _sandbox_checked(
                await sandbox.post(
                    "/sandbox/admin/launches",
                    json={
                        "course_id": world["course_id"],
                        "user": student["lti_id"],
                        "assignment_id": world["assignment_id"],
                    },
                )
            )
            _checked(
                await api.post(
                    "/v1/launches",
                    json={
                        "id_token": launch["id_token"],
                        "formative_id": formative_id,
                        "student_id": student["user_id"],
                        "class_id": "demo-class",
                    },
                )
            )
            answer = _checked(
                await api.post(
                    "/v1/submission-events",
                    json=_event(formative_id, student["user_id"], score, max_score),
                )
            )
            status = (
                await _wait_for_job(api, answer["job_id"], wait_seconds)
                if answer.get("job_id")
                else f"not sent: {[reason['code'] for reason in answer['reasons']]}"
            )
            cell = _sandbox_checked(
                await sandbox.get(
                    f"/sandbox/admin/assignments/{world['assignment_id']}"
                    f"/submissions/{student['lti_id']}"
                )
            )
            result = DemoResult(name, f"{score}/{max_score}", status, cell.get("score"))
            results.append(result)
            if on_result is not None:
                on_result(result)
        origin = sandbox_url.rstrip("/")
        return DemoRun(
            results=results,
            course_id=str(world["course_id"]),
            gradebook_url=f"{origin}/sandbox/gradebook/courses/{world['course_id']}/html",
            formative_id=formative_id,
            teacher_id=DEMO_TEACHER_ID,
        )
