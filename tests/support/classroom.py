"""A class that takes a formative from a Canvas assignment, built through the public APIs.

The sandbox gets a developer key holding the service's tool key, a course, an assignment and
students; the service gets the platform registration, the students' launches (the sandbox's
id_tokens through `POST /v1/launches`) and their work (`POST /v1/submission-events`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.context import AppContext
from app.delivery.engine import DeliveryEngine
from app.lti.keys import ToolKeyring
from tests.support.auth import ADMIN_KEY, EVENTS_KEY, bearer
from tests.support.sandbox import RunningSandbox

ADMIN = bearer(ADMIN_KEY)
EVENTS = bearer(EVENTS_KEY)


def number(value: Decimal | int | str) -> int | float:
    """A JSON number for a test score (short decimals such as 8.5 print back exactly)."""
    exact = Decimal(str(value))
    return int(exact) if exact == exact.to_integral_value() else float(exact)


@dataclass
class Student:
    student_id: str
    """Formative's id of the student."""
    name: str
    user_id: str
    """The Canvas user id (the sandbox gradebook's key)."""
    lti_id: str


@dataclass
class Classroom:
    """One formative assigned in one Canvas course, seen from both sides."""

    api: httpx.AsyncClient
    sandbox: RunningSandbox
    world: dict[str, Any]
    platform_id: str
    formative_id: str
    class_id: str
    teacher_ids: list[str]
    students: list[Student]
    max_score: Decimal = Decimal(10)
    submitted_at: dict[str, str] = field(default_factory=dict)

    @property
    def course_id(self) -> str:
        return str(self.world["course_id"])

    @property
    def assignment_id(self) -> str:
        return str(self.world["assignment_id"])

    def student(self, student_id: str) -> Student:
        return next(s for s in self.students if s.student_id == student_id)

    async def launch(self, student_id: str, *, from_assignment: bool = True) -> dict[str, Any]:
        """The student opens the formative from Canvas; Formative reports the launch."""
        student = self.student(student_id)
        fields: dict[str, Any] = {"assignment_id": self.assignment_id} if from_assignment else {}
        issued = await self.sandbox.admin.launch(self.course_id, student.user_id, **fields)
        response = await self.api.post(
            "/v1/launches",
            json={
                "id_token": issued["id_token"],
                "formative_id": self.formative_id,
                "student_id": student_id,
                "class_id": self.class_id,
            },
            headers=EVENTS,
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def work(
        self,
        student_id: str,
        score: Decimal | int | str,
        *,
        event_type: str = "submitted",
        cause: str | None = None,
        attempt: int = 1,
        license: str = "school_district",
        automatic: bool = False,
        with_submission: bool = True,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """Formative reports the student's work: started, submitted, or updated (with the
        submission's time and author unless `with_submission` is False). `automatic`: the
        formative is auto-graded with automatic passback on. `at`: when it happened (now)."""
        student = self.student(student_id)
        moment = at or datetime.now(UTC)
        now = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if event_type == "submitted":
            self.submitted_at[student_id] = now
        event: dict[str, Any] = {
            "event_id": f"evt-{uuid.uuid4().hex}",
            "type": event_type,
            "occurred_at": now,
            "organization": {"id": "org-1", "license": license},
            "formative": {
                "id": self.formative_id,
                "title": "Fractions quiz",
                "auto_passback": automatic,
                "teacher_ids": self.teacher_ids,
                "questions": [
                    {
                        "id": "q1",
                        "points": number(self.max_score),
                        "grading": "auto" if automatic else "manual",
                    }
                ],
            },
            "student": {"id": student_id, "class_id": self.class_id, "name": student.name},
            "attempt": attempt,
            "score": number(score),
            "max_score": number(self.max_score),
            "response_url": f"https://formative.example/r/{student_id}",
        }
        if cause is not None:
            event["cause"] = cause
        if student_id in self.submitted_at and with_submission:
            event["submitted_by"] = "student"
            event["submitted_at"] = self.submitted_at[student_id]
        response = await self.api.post("/v1/submission-events", json=event, headers=EVENTS)
        assert response.status_code in (200, 202), response.text
        body: dict[str, Any] = response.json()
        return body

    async def gradebook_score(self, student_id: str) -> Decimal | None:
        cell = await self.sandbox.admin.submission(
            self.assignment_id, self.student(student_id).user_id
        )
        return None if cell["score"] is None else Decimal(cell["score"])

    async def submission(self, student_id: str) -> dict[str, Any]:
        return await self.sandbox.admin.submission(
            self.assignment_id, self.student(student_id).user_id
        )


async def make_classroom(
    api: httpx.AsyncClient,
    sandbox: RunningSandbox,
    keyring: ToolKeyring | None,
    *,
    tool_jwks_url: str | None = None,
    points: Decimal | int | str = 10,
    student_names: tuple[str, ...] = ("Ada Lovelace", "Grace Hopper", "Alan Turing"),
    formative_id: str = "fm-42",
    class_id: str = "c-3",
    teacher_ids: tuple[str, ...] = ("t-1", "t-2"),
) -> Classroom:
    """A Canvas course with the tool (whose keys are `keyring`'s, or fetched from
    `tool_jwks_url` on every token request) and an assignment worth `points`, registered with
    the service. Nobody has launched or worked yet."""
    tool_keys = {"tool_jwk": keyring.jwks()} if keyring else {"tool_jwks_url": tool_jwks_url}
    world = await sandbox.admin.scenario(
        **tool_keys, points=str(points), students=list(student_names)
    )
    registered = await api.post(
        "/v1/platforms",
        json={
            "issuer": world["issuer"],
            "client_id": world["client_id"],
            "deployment_ids": [world["deployment_id"]],
            "token_url": world["token_url"],
            "jwks_url": world["jwks_url"],
            "allowed_hosts": ["127.0.0.1"],
            "label": "Sandbox Canvas",
        },
        headers=ADMIN,
    )
    assert registered.status_code == 201, registered.text
    students = [
        Student(
            student_id=f"s-{number}",
            name=seeded["name"],
            user_id=seeded["user_id"],
            lti_id=seeded["lti_id"],
        )
        for number, seeded in enumerate(world["students"], start=1)
    ]
    return Classroom(
        api=api,
        sandbox=sandbox,
        world=world,
        platform_id=registered.json()["id"],
        formative_id=formative_id,
        class_id=class_id,
        teacher_ids=list(teacher_ids),
        students=students,
    )


@pytest.fixture(name="classroom")
async def twenty_point_classroom_fixture(
    client: httpx.AsyncClient, sandbox: RunningSandbox, context: AppContext
) -> Classroom:
    """`classroom`: a class taking a formative from a Canvas assignment worth 20 points, on the
    test's service (`client`, `context`) and sandbox. Import it into a test module to use it."""
    return await make_classroom(client, sandbox, context.keyring, points=20)


async def deliver_all(context: AppContext) -> None:
    """Run this instance's delivery engine until every due job is finished and written."""
    await DeliveryEngine(context).drain()
