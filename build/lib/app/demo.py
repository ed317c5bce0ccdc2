"""`passback demo`: pass grades end to end against a running service and its sandbox Canvas.

What a newcomer would do by hand: a Canvas course with the tool, students launching the
formative from the Canvas assignment, Formative reporting their submissions, and the grades
appearing in the gradebook.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

DEMO_SCORES = (("Ada Lovelace", 7, 10), ("Grace Hopper", 9, 10), ("Alan Turing", 5, 8))
FINAL_STATUSES = {"delivered", "failed", "superseded"}


@dataclass(frozen=True)
class DemoResult:
    student: str
    percent: str
    job_status: str
    canvas_score: str | None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _checked(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        raise RuntimeError(
            f"{response.request.method} {response.request.url}: "
            f"{response.status_code} {response.text}"
        )
    body: dict[str, Any] = response.json()
    return body


async def _register(api: httpx.AsyncClient, world: dict[str, Any], sandbox_host: str) -> None:
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
            "teacher_ids": ["demo-teacher"],
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
    api_url: str, sandbox_url: str, api_key: str, *, wait_seconds: float = 30.0
) -> list[DemoResult]:
    headers = {"Authorization": f"Bearer {api_key}"}
    async with (
        httpx.AsyncClient(base_url=api_url, headers=headers, timeout=10) as api,
        httpx.AsyncClient(base_url=sandbox_url, timeout=10) as sandbox,
    ):
        world = _checked(
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
        results = []
        for student, (name, score, max_score) in zip(world["students"], DEMO_SCORES, strict=True):
            launch = _checked(
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
            cell = _checked(
                await sandbox.get(
                    f"/sandbox/admin/assignments/{world['assignment_id']}"
                    f"/submissions/{student['lti_id']}"
                )
            )
            results.append(DemoResult(name, f"{score}/{max_score}", status, cell.get("score")))
        return results
