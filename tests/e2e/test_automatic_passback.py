"""Automatic passback end to end: `passback serve` (uvicorn, delivery workers on) and the
sandbox Canvas over loopback, driven only through their public HTTP surfaces.

A student launches from a Canvas assignment (the sandbox signs the id_token, the service
verifies it against the sandbox's JWKS), Formative reports a fully auto-graded, submitted
first attempt, and the grade appears in the sandbox gradebook. Each scenario of the seed in
which automatic passback must not fire answers with its reason and sends nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.canvas_world import (
    ADMIN,
    DROP,
    EVENTS,
    CanvasWorld,
    canvas_world,
    event,
    id_token,
    post_launch,
)
from tests.support.processes import ServiceProcess, service_on_emptied_database
from tests.support.sandbox import (  # noqa: F401  (fixtures)
    RunningSandbox,
    sandbox_fixture,
    sandbox_server_fixture,
)

DELIVERY_TIMEOUT_SECONDS = 30.0


@pytest.fixture(scope="module")
async def service(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, tool_keys_dir: Path
) -> AsyncIterator[ServiceProcess]:
    """`passback serve` on an emptied database, workers on: one per backend for the module
    (each test's school is a registration of its own: the sandbox never repeats an id)."""
    var_dir = tmp_path_factory.mktemp("service")
    async with service_on_emptied_database(
        database_url,
        var_dir=var_dir,
        keys_dir=tool_keys_dir,
        worker_poll_interval=0.05,
        log_level="WARNING",
    ) as running:
        yield running


@pytest.fixture
async def api(service: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
        yield client


@pytest.fixture
async def school(
    api: httpx.AsyncClient, sandbox: RunningSandbox, service: ServiceProcess
) -> CanvasWorld:
    """A Canvas course whose developer key trusts the service's published tool keys, with a
    20-point assignment and eight students; registered with the service."""
    return await canvas_world(
        api,
        sandbox,
        tool_jwks_url=f"{service.base_url}/.well-known/jwks.json",
        points="20",
        students=8,
    )


class Formative:
    """One formative whose students open it from the school's Canvas assignment."""

    def __init__(
        self, api: httpx.AsyncClient, sandbox: RunningSandbox, school: CanvasWorld
    ) -> None:
        self.api = api
        self.sandbox = sandbox
        self.school = school
        self.id = f"fm-{uuid.uuid4().hex[:8]}"

    async def launch(self, student: int, **fields: Any) -> dict[str, Any]:
        token = await id_token(self.sandbox, self.school, student, **fields)
        response = await post_launch(
            self.api, token, student_id=self.student_id(student), formative_id=self.id
        )
        assert response.status_code == 201, response.text
        binding: dict[str, Any] = response.json()
        return binding

    def student_id(self, student: int) -> str:
        return f"s-{student}"

    async def report(self, student: int, **changes: Any) -> dict[str, Any]:
        """Formative's backend reports an event about the student's work (by default: the
        submitted, fully auto-graded first attempt, 7 of 10)."""
        body = event(
            event_id=f"evt-{uuid.uuid4().hex}",
            student={"id": self.student_id(student), "class_id": "c-3", "name": "A student"},
            **{"formative.id": self.id},
            **changes,
        )
        response = await self.api.post("/v1/submission-events", json=body, headers=EVENTS)
        assert response.status_code == 202, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def cell(self, student: int, world: CanvasWorld | None = None) -> dict[str, Any]:
        world = world or self.school
        user = world.scenario["students"][student]["user_id"]
        return await self.sandbox.admin.submission(world.assignment_id, user)

    async def jobs(self, student: int) -> list[dict[str, Any]]:
        response = await self.api.get(
            "/v1/passback/jobs",
            params={"formative_id": self.id, "student_id": self.student_id(student)},
            headers=ADMIN,
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items


@pytest.fixture
def formative(api: httpx.AsyncClient, sandbox: RunningSandbox, school: CanvasWorld) -> Formative:
    return Formative(api, sandbox, school)


async def graded(formative: Formative, student: int) -> dict[str, Any]:
    """The student's gradebook cell once it has a score (fails after the timeout)."""
    deadline = asyncio.get_running_loop().time() + DELIVERY_TIMEOUT_SECONDS
    while True:
        cell = await formative.cell(student)
        if cell["score"] is not None:
            return cell
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no grade for student {student} after the timeout: {cell}")
        await asyncio.sleep(0.1)


async def finished_job(formative: Formative, student: int) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + DELIVERY_TIMEOUT_SECONDS
    while True:
        [job] = await formative.jobs(student)
        if job["status"] not in ("pending", "in_flight"):
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job still {job['status']} after the timeout: {job}")
        await asyncio.sleep(0.1)


def reasons(answer: dict[str, Any]) -> list[str]:
    return [reason["code"] for reason in answer["reasons"]]


async def test_a_submitted_auto_graded_first_attempt_lands_in_the_canvas_gradebook(
    formative: Formative,
) -> None:
    binding = await formative.launch(0)
    assert binding["gradable"] is True

    answer = await formative.report(0, score=7, max_score=10)

    assert answer["decision"] == "queued"
    cell = await graded(formative, 0)
    # 7 of 10 is 70% of the assignment's 20 points.
    assert Decimal(cell["score"]) == Decimal(14)
    assert cell["attempt"] == 1
    assert cell["submission_type"] == "basic_lti_launch"
    assert cell["url"] == "https://formative.example/r/abc"
    # The grade lands before the worker records the answer: wait for the job to finish.
    job = await finished_job(formative, 0)
    assert job["status"] == "delivered"
    assert job["id"] == answer["job_id"]


async def test_the_grade_follows_the_canvas_points_at_delivery_time(
    formative: Formative, sandbox: RunningSandbox, school: CanvasWorld
) -> None:
    await sandbox.admin.set_assignment_points(school.assignment_id, "15")
    await formative.launch(1)
    await formative.report(1, score=2, max_score=3)
    cell = await graded(formative, 1)
    assert Decimal(cell["score"]) == Decimal(10)


SCENARIOS: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "manual-graded question",
        {
            "formative.questions": [
                {"id": "q1", "points": 5, "grading": "auto"},
                {"id": "q2", "points": 5, "grading": "manual"},
            ]
        },
        ["manual_grading_required"],
    ),
    (
        "rubric",
        {"formative.questions": [{"id": "q1", "points": 10, "grading": "rubric"}]},
        ["manual_grading_required"],
    ),
    ("second attempt", {"attempt": 2}, ["not_first_attempt"]),
    ("unlicensed organization", {"organization.license": "free"}, ["license_required"]),
    ("automatic passback toggled off", {"formative.auto_passback": False}, ["auto_passback_off"]),
    (
        "not submitted yet",
        {"type": "started", "submitted_at": DROP, "submitted_by": DROP},
        ["not_submitted"],
    ),
]


@pytest.mark.parametrize(
    ("scenario", "changes", "expected"), SCENARIOS, ids=[name for name, _, _ in SCENARIOS]
)
async def test_a_seed_scenario_sends_nothing_and_answers_with_its_reason(
    formative: Formative, scenario: str, changes: dict[str, Any], expected: list[str]
) -> None:
    await formative.launch(2)
    answer = await formative.report(2, **changes)

    assert answer["decision"] == "not_eligible", scenario
    assert reasons(answer) == expected
    assert answer["job_id"] is None
    await nothing_was_sent(formative, 2)


async def nothing_was_sent(formative: Formative, student: int, *, earlier_jobs: int = 0) -> None:
    """No new job for the student, and no grade in Canvas (none beyond the earlier jobs'),
    even after another student's passback has gone all the way through the same workers."""
    sentinel = 7
    await formative.launch(sentinel)
    await formative.report(sentinel)
    await graded(formative, sentinel)
    assert len(await formative.jobs(student)) == earlier_jobs
    if not earlier_jobs:
        assert (await formative.cell(student))["score"] is None


async def test_a_student_who_did_not_launch_from_canvas_gets_nothing_sent(
    formative: Formative,
) -> None:
    answer = await formative.report(3)
    assert reasons(answer) == ["not_launched_from_lms"]
    await nothing_was_sent(formative, 3)


async def test_a_launch_from_outside_an_assignment_gets_nothing_sent(
    formative: Formative,
) -> None:
    binding = await formative.launch(3, from_assignment=False)
    assert [reason["code"] for reason in binding["reasons"]] == ["not_a_canvas_assignment"]
    answer = await formative.report(3)
    assert reasons(answer) == ["not_a_canvas_assignment"]
    await nothing_was_sent(formative, 3)


@pytest.mark.parametrize(
    "cause",
    [
        "answer_completed",
        "answer_edited",
        "teacher_adjusted",
        "answer_key_changed",
        "points_changed",
    ],
)
async def test_changes_after_the_submission_do_not_change_the_canvas_grade(
    formative: Formative, cause: str
) -> None:
    await formative.launch(4)
    await formative.report(4, score=6, max_score=10)
    first = await graded(formative, 4)

    answer = await formative.report(
        4, type="updated", cause=cause, score=9, occurred_at="2026-11-21T09:00:00.000Z"
    )

    assert reasons(answer) == ["already_passed_back", "changed_after_submission"]
    await nothing_was_sent(formative, 4, earlier_jobs=1)
    after = await formative.cell(4)
    assert (after["score"], after["attempt"]) == (first["score"], 1)


async def test_a_repeated_submission_is_passed_back_once(formative: Formative) -> None:
    await formative.launch(5)
    await formative.report(5)
    await graded(formative, 5)
    again = await formative.report(5, occurred_at="2026-11-20T15:00:00.000Z")

    assert reasons(again) == ["already_passed_back"]
    assert len(await formative.jobs(5)) == 1
    assert (await formative.cell(5))["attempt"] == 1


async def test_a_zero_point_assignment_gets_nothing_sent_and_says_why(
    api: httpx.AsyncClient,
    sandbox: RunningSandbox,
    service: ServiceProcess,
    formative: Formative,
) -> None:
    zero_points = await canvas_world(
        api, sandbox, tool_jwks_url=f"{service.base_url}/.well-known/jwks.json", points="0"
    )
    formative.school = zero_points
    await formative.launch(0)

    answer = await formative.report(0)

    # Only delivery can read the line item's points: the event is queued, the job fails.
    assert answer["decision"] == "queued"
    job = await finished_job(formative, 0)
    assert job["status"] == "failed"
    assert job["outcome_code"] == "canvas_points_missing"
    assert job["outcome_text"]
    assert (await formative.cell(0))["score"] is None
    scores = await sandbox.admin.requests(path_contains="/scores", method="POST")
    assert scores == []


@pytest.mark.parametrize("forgery", ["bad_signature", "expired"])
async def test_a_forged_or_expired_launch_is_refused(formative: Formative, forgery: str) -> None:
    token = await id_token(formative.sandbox, formative.school, 6, forge=forgery)
    response = await post_launch(
        formative.api, token, student_id=formative.student_id(6), formative_id=formative.id
    )
    assert response.status_code == 422
    assert (
        response.json()["code"]
        == {
            "bad_signature": "invalid_signature",
            "expired": "token_expired",
        }[forgery]
    )
    answer = await formative.report(6)
    assert reasons(answer) == ["not_launched_from_lms"]
