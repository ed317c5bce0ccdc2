"""A Canvas class and the service, seen from outside: everything goes over HTTP.

For tests that run the service as a process (tests/support/processes.py): the sandbox Canvas
gets a course, an assignment and students trusting the service's tool key; the service gets
the platform registration, the students' launches (real id_tokens signed by the sandbox) and
Formative's submission events, exactly as Formative's backend would send them.

Scores are chosen so the expected Canvas grade is exact: the assignment is worth as many
points as the formative, so the grade is the Formative score itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx

from app.lti.keys import ToolKeyring
from app.sandbox.launch import LaunchRequest, issue_launch
from tests.support.auth import ADMIN_KEY, EVENTS_KEY, bearer
from tests.support.sandbox import RunningSandbox

ADMIN = bearer(ADMIN_KEY)
EVENTS = bearer(EVENTS_KEY)
POINTS = Decimal(10)
T = TypeVar("T")


@dataclass(frozen=True)
class Learner:
    student_id: str
    """Formative's id."""
    user_id: str
    """Canvas's id (the gradebook's key)."""
    lti_id: str
    score: Decimal
    """What Formative scored (out of POINTS), and so the grade Canvas must show."""


@dataclass
class RemoteClass:
    sandbox: RunningSandbox
    scenario: dict[str, Any]
    platform_id: str
    learners: list[Learner]
    formative_id: str = field(default_factory=lambda: f"fm-{uuid.uuid4().hex[:8]}")
    class_id: str = "c-1"
    teacher_ids: tuple[str, ...] = ("t-1",)

    @property
    def course_id(self) -> str:
        return str(self.scenario["course_id"])

    @property
    def assignment_id(self) -> str:
        return str(self.scenario["assignment_id"])

    @property
    def client_id(self) -> str:
        return str(self.scenario["client_id"])

    def id_token(self, learner: Learner) -> str:
        """The id_token Canvas posts when the student opens the formative from the assignment
        (signed in-process by the sandbox: thousands are needed quickly)."""
        request = LaunchRequest(
            course_id=self.course_id, user=learner.user_id, assignment_id=self.assignment_id
        )
        return issue_launch(self.sandbox.state, self.sandbox.base_url, request).id_token

    def launch_body(self, learner: Learner) -> dict[str, Any]:
        return {
            "id_token": self.id_token(learner),
            "formative_id": self.formative_id,
            "student_id": learner.student_id,
            "class_id": self.class_id,
        }

    def submitted_event(self, learner: Learner, *, event_id: str | None = None) -> dict[str, Any]:
        """The student's first full submission of a fully auto-graded formative: eligible."""
        now = iso_now()
        return {
            "event_id": event_id or f"evt-{uuid.uuid4().hex}",
            "type": "submitted",
            "occurred_at": now,
            "organization": {"id": "org-1", "license": "school_district"},
            "formative": {
                "id": self.formative_id,
                "title": "Fractions quiz",
                "auto_passback": True,
                "teacher_ids": list(self.teacher_ids),
                "questions": [{"id": "q1", "points": int(POINTS), "grading": "auto"}],
            },
            "student": {"id": learner.student_id, "class_id": self.class_id, "name": "Student"},
            "attempt": 1,
            "submitted_by": "student",
            "submitted_at": now,
            "score": float(learner.score) if learner.score % 1 else int(learner.score),
            "max_score": int(POINTS),
            "response_url": f"https://formative.example/r/{learner.student_id}",
        }

    async def gradebook(self) -> dict[str, dict[str, Any]]:
        """Every student's cell of the assignment, by Canvas user id."""
        book = await self.sandbox.admin.gradebook(self.course_id)
        [assignment] = [a for a in book["assignments"] if str(a["id"]) == self.assignment_id]
        return {str(cell["user_id"]): cell for cell in assignment["submissions"]}


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def score_of(number: int) -> Decimal:
    """A spread of exact scores out of 10: 0, 0.1, …, 10 (one decimal)."""
    return Decimal(number % 101) / 10


async def seed_class(
    api: httpx.AsyncClient,
    sandbox: RunningSandbox,
    keys_dir: Path,
    *,
    students: int,
    allowed_hosts: Sequence[str] = ("127.0.0.1",),
) -> RemoteClass:
    """A course trusting the service's tool key, an assignment worth POINTS, `students`
    students, and the platform registered with the service through its admin API."""
    keyring = ToolKeyring.load(keys_dir)
    scenario = await sandbox.admin.scenario(
        tool_jwk=keyring.current.public_jwk(), points=str(POINTS), students=students
    )
    registration = {
        "issuer": scenario["issuer"],
        "client_id": scenario["client_id"],
        "deployment_ids": [scenario["deployment_id"]],
        "token_url": scenario["token_url"],
        "jwks_url": scenario["jwks_url"],
        "allowed_hosts": list(allowed_hosts),
        "label": "Sandbox Canvas",
    }
    response = await api.post("/v1/platforms", json=registration, headers=ADMIN)
    assert response.status_code == 201, response.text
    learners = [
        Learner(
            student_id=f"s-{number}",
            user_id=str(seeded["user_id"]),
            lti_id=str(seeded["lti_id"]),
            score=score_of(number),
        )
        for number, seeded in enumerate(scenario["students"])
    ]
    return RemoteClass(sandbox, scenario, str(response.json()["id"]), learners)


async def bounded(
    items: Iterable[T], work: Callable[[T], Awaitable[None]], *, concurrency: int
) -> None:
    """Run `work` over `items`, at most `concurrency` at a time."""
    queue: asyncio.Queue[T] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker() -> None:
        while True:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await work(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def post_until_answered(
    api: httpx.AsyncClient,
    path: str,
    body: dict[str, Any],
    *,
    headers: dict[str, str],
    give_up_after: float = 60.0,
    retry_statuses: frozenset[int] = frozenset({502, 503, 504}),
) -> httpx.Response:
    """What a careful client does: resend the same body (same event_id) while the service is
    down or unavailable, until it answers something else."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after
    while True:
        with contextlib.suppress(httpx.TransportError):
            response = await api.post(path, json=body, headers=headers)
            if response.status_code not in retry_statuses:
                return response
        if loop.time() > deadline:
            raise TimeoutError(f"POST {path} not answered within {give_up_after} s")
        await asyncio.sleep(0.1)


async def launch_all(api: httpx.AsyncClient, room: RemoteClass, *, concurrency: int = 8) -> None:
    async def launch(learner: Learner) -> None:
        response = await post_until_answered(
            api, "/v1/launches", room.launch_body(learner), headers=EVENTS
        )
        assert response.status_code == 201, response.text

    await bounded(room.learners, launch, concurrency=concurrency)
