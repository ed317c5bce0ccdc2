"""One full run of the service as a process, logging at DEBUG, for the tests that read what it
left behind: its logs (no secret may be in them; request and job ids must be) and its
metrics (they must have moved).

The run does what a school does, plus some trouble: an operator registers Canvas; students
launch; Formative reports submissions and the grades go to Canvas through injected 5xx, a
throttled answer and a lost answer; Canvas stops honouring the access token (a 401, a fresh
token); one student leaves the course (a failed job, which the operator reads and
retries); a teacher previews and sends a manual passback with a comment; someone presents a
bad key, a bad teacher token and a forged id_token. The run happens once per test session
(`await full_run(...)`), whichever test asks first.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

from app.sandbox import SandboxConfig
from app.sandbox.launch import LaunchRequest, issue_launch
from tests.reliability.database import new_postgres_database
from tests.reliability.remote import ADMIN, EVENTS, RemoteClass, launch_all, seed_class
from tests.support import databases
from tests.support.auth import bearer, teacher_token
from tests.support.processes import parse_log_lines, service_env, start_service
from tests.support.sandbox import run_sandbox

STUDENTS = 6
REQUEST_ID = "trace-7f3a-full-run"
SETTLE_SECONDS = 60.0


@dataclass
class FullRun:
    log_text: str
    metrics_text: str
    """/metrics scraped at the end of the run."""
    room: RemoteClass | None = None
    secrets: dict[str, set[str]] = field(default_factory=dict)
    """What must never be logged, by kind: each value and its signature part (for JWTs)."""
    failed_job: dict[str, Any] = field(default_factory=dict)
    delivered_jobs: int = 0
    statuses: dict[str, int] = field(default_factory=dict)

    def log_records(self) -> list[dict[str, Any]]:
        return list(parse_log_lines(self.log_text))


_result: FullRun | None = None
_lock: asyncio.Lock | None = None


async def full_run(keys_dir: Path, work_dir: Path) -> FullRun:
    """The run's results (made on the first call of the session)."""
    global _result, _lock
    _lock = _lock or asyncio.Lock()
    async with _lock:
        if _result is None:
            url = await new_postgres_database()
            try:
                _result = await _run(url, keys_dir, work_dir)
            finally:
                await databases.drop_postgres_database(url)
        return _result


def _jwt_parts(token: str) -> set[str]:
    """The token, and its signature (a partial redaction must not leave it behind)."""
    parts = {token}
    signature = token.rsplit(".", 1)[-1]
    if len(signature) >= 16:
        parts.add(signature)
    return parts


def _pem_material(keys_dir: Path) -> set[str]:
    """Every line of every tool private key's body (64 base64 characters each)."""
    material = set()
    for path in keys_dir.glob("*.pem"):
        for line in path.read_text().splitlines():
            if line and not line.startswith("-----") and len(line) >= 32:
                material.add(line)
    return material


async def _wait_for(check: Any, *, seconds: float = SETTLE_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("the run did not settle")
        await asyncio.sleep(0.2)


async def _jobs(api: httpx.AsyncClient, formative_id: str) -> list[dict[str, Any]]:
    page = await api.get(
        "/v1/passback/jobs", params={"formative_id": formative_id, "limit": 200}, headers=ADMIN
    )
    assert page.status_code == 200, page.text
    items: list[dict[str, Any]] = page.json()["items"]
    return items


async def _run(database_url: str, keys_dir: Path, work_dir: Path) -> FullRun:
    log_path = work_dir / "full-run.log"
    async with run_sandbox(SandboxConfig()) as sandbox:
        env = service_env(database_url, var_dir=work_dir, keys_dir=keys_dir, log_level="DEBUG")
        service = await start_service(env, log_path=log_path)
        teacher = teacher_token("t-1")
        secrets: dict[str, set[str]] = {
            "api_key": {"test-admin-key-0123456789", "test-events-key-0123456789"},
            "teacher_token": _jwt_parts(teacher),
            "teacher_token_secret": {env["PASSBACK_TEACHER_TOKEN_SECRET"]},
            "private_key": _pem_material(keys_dir),
            "id_token": set(),
        }
        secrets["api_key"].add("test-passback-key-0123456789")
        result = FullRun(log_text="", metrics_text="")
        try:
            async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as api:
                room = await seed_class(api, sandbox, keys_dir, students=STUDENTS)
                result.room = room
                await launch_all(api, room)
                for learner in room.learners:
                    request = LaunchRequest(
                        course_id=room.course_id,
                        user=learner.user_id,
                        assignment_id=room.assignment_id,
                    )
                    token = issue_launch(sandbox.state, sandbox.base_url, request).id_token
                    secrets["id_token"] |= _jwt_parts(token)
                # Trouble on the way to Canvas, and one student no longer in the course.
                await sandbox.admin.set_faults(
                    rules=[
                        {"kind": "error", "status": 502, "remaining": 2, "path": "/scores$"},
                        {"kind": "throttle", "remaining": 1, "path": "/scores$"},
                        {"kind": "drop", "phase": "after", "remaining": 1, "path": "/scores$"},
                    ]
                )
                leaver = room.learners[-1]
                await sandbox.admin.set_enrollment_state(room.course_id, leaver.user_id, "deleted")
                automatic = [*room.learners[:4], leaver]
                for learner in automatic:
                    response = await api.post(
                        "/v1/submission-events",
                        json=room.submitted_event(learner),
                        headers={**EVENTS, "X-Request-Id": REQUEST_ID},
                    )
                    assert response.status_code == 202, response.text

                async def automatic_settled() -> bool:
                    jobs = await _jobs(api, room.formative_id)
                    return len(jobs) == len(automatic) and all(
                        job["status"] in ("delivered", "failed") for job in jobs
                    )

                await _wait_for(automatic_settled)
                # Canvas stops honouring the token it issued (as after a key rotation on its
                # side): the next AGS call gets a 401, and the service fetches a new token.
                with sandbox.state.lock:
                    sandbox.state.access_token_secret = os.urandom(32)
                failed = [
                    job for job in await _jobs(api, room.formative_id) if job["status"] == "failed"
                ]
                assert [job["student_id"] for job in failed] == [leaver.student_id], failed
                detail = await api.get(f"/v1/passback/jobs/{failed[0]['id']}", headers=ADMIN)
                assert detail.status_code == 200
                result.failed_job = detail.json()
                await sandbox.admin.set_enrollment_state(room.course_id, leaver.user_id, "active")
                retried = await api.post(
                    f"/v1/passback/jobs/{failed[0]['id']}/retry", headers=ADMIN
                )
                assert retried.status_code == 202, retried.text
                # A teacher previews and sends everyone, with a comment.
                preview = await api.get(
                    f"/v1/formatives/{room.formative_id}/passback/preview",
                    headers=bearer(teacher),
                )
                assert preview.status_code == 200, preview.text
                sent = await api.post(
                    f"/v1/formatives/{room.formative_id}/passback",
                    json={
                        "mode": "grades",
                        "select": {"class_ids": [room.class_id]},
                        "comment": "Well done.",
                    },
                    headers={**bearer(teacher), "Idempotency-Key": "full-run-1"},
                )
                assert sent.status_code == 202, sent.text
                # Callers with the wrong credentials.
                assert (
                    await api.get("/v1/platforms", headers=bearer("wrong-key"))
                ).status_code == 401
                forged = teacher[:-4] + ("AAAA" if not teacher.endswith("AAAA") else "BBBB")
                assert (
                    await api.get(
                        f"/v1/formatives/{room.formative_id}/passback/preview",
                        headers=bearer(forged),
                    )
                ).status_code == 401
                bad_launch = {**room.launch_body(room.learners[0]), "id_token": forged}
                assert (
                    await api.post("/v1/launches", json=bad_launch, headers=EVENTS)
                ).status_code == 422

                async def everything_settled() -> bool:
                    jobs = await _jobs(api, room.formative_id)
                    return bool(jobs) and all(
                        job["status"] in ("delivered", "failed", "superseded") for job in jobs
                    )

                await _wait_for(everything_settled)
                jobs = await _jobs(api, room.formative_id)
                result.statuses = {
                    status: sum(1 for job in jobs if job["status"] == status)
                    for status in {job["status"] for job in jobs}
                }
                result.delivered_jobs = result.statuses.get("delivered", 0)
                result.metrics_text = (await api.get("/metrics")).text
            for logged in await sandbox.admin.requests(path_contains="/login/oauth2/token"):
                form = parse_qs(logged["request_body"])
                for assertion in form.get("client_assertion", []):
                    secrets.setdefault("client_assertion", set()).update(_jwt_parts(assertion))
                if logged["status"] == 200 and logged["response_body"]:
                    token = json.loads(logged["response_body"])["access_token"]
                    secrets.setdefault("access_token", set()).update(_jwt_parts(token))
        finally:
            await service.terminate()
    result.log_text = log_path.read_text(errors="replace")
    result.secrets = secrets
    return result
