"""A queued job becomes a Canvas grade: exactly, once, through faults, and in order."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from app.context import AppContext
from app.delivery import DeliveryEngine, LanePolicy
from app.lti.ags_documents import CANVAS_SUBMISSION_EXTENSION
from app.manual.jobs import retry_job
from app.store.db import transaction
from app.store.models import JobKind, JobStatus, Platform
from tests.lti.world import RESPONSE_URL, World, make_world, quick_policy
from tests.support.sandbox import RunningSandbox

SCORES = r"/scores$"


def posted(post: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(post["request_body"])
    return body


def new_submission_flags(posts: list[dict[str, Any]]) -> list[bool]:
    return [posted(post)[CANVAS_SUBMISSION_EXTENSION]["new_submission"] for post in posts]


async def logged_posts(world: World, count: int) -> list[dict[str, Any]]:
    """The score posts, once `count` are in the sandbox's log (a request is logged when its
    answer is complete: a delayed answer comes after the delivery moved on)."""
    for _ in range(100):
        posts = await world.score_posts()
        if len(posts) >= count:
            return posts
        await asyncio.sleep(0.05)
    return await world.score_posts()


async def test_a_queued_job_becomes_the_canvas_grade_with_speedgrader_data(
    world: World, engine: DeliveryEngine
) -> None:
    await world.sandbox.admin.set_assignment_points(world.assignment_id, 15)
    student = world.students[0]
    job_id = await world.enqueue(student, score=7, max_score=10)

    await engine.drain()

    cell = await world.cell(student)
    assert cell["score"] == "10.5"  # 70% of 15 points
    assert cell["attempt"] == 1
    assert cell["submission_type"] == "basic_lti_launch"
    assert cell["url"] == RESPONSE_URL.format(student=student)
    assert new_submission_flags(await world.score_posts()) == [True]
    job = await world.job(job_id)
    assert job.status == JobStatus.delivered
    assert (job.canvas_points, job.score_given, job.score_maximum) == (
        Decimal(15),
        Decimal("10.5"),
        Decimal(15),
    )
    assert job.finished_at is not None and job.lease_owner is None
    [attempt] = await world.attempts(job_id)
    assert (attempt.http_status, attempt.outcome) == (200, "delivered")


async def test_points_changed_after_queueing_are_read_when_sending(
    world: World, engine: DeliveryEngine
) -> None:
    student = world.students[0]
    await world.enqueue(student, score="2", max_score="3")
    await world.sandbox.admin.set_assignment_points(world.assignment_id, "20")
    await engine.drain()
    assert (await world.cell(student))["score"] == "13.33"


async def test_a_later_grade_for_the_same_submission_is_an_update_not_a_new_attempt(
    world: World, engine: DeliveryEngine
) -> None:
    student = world.students[0]
    submitted_at = world.clock() - timedelta(minutes=5)
    await world.enqueue(student, score=5, submitted_at=submitted_at)
    await engine.drain()
    world.clock.advance(1)
    await world.enqueue(student, score=9, submitted_at=submitted_at)
    await engine.drain()
    cell = await world.cell(student)
    assert (cell["score"], cell["attempt"]) == ("9", 1)
    assert new_submission_flags(await world.score_posts()) == [True, False]


async def test_an_automatic_job_is_not_sent_to_a_zero_point_assignment(
    world: World, engine: DeliveryEngine
) -> None:
    await world.sandbox.admin.set_assignment_points(world.assignment_id, 0)
    automatic = await world.enqueue(world.students[0], kind=JobKind.automatic)
    manual = await world.enqueue(world.students[1], kind=JobKind.manual)
    await engine.drain()
    job = await world.job(automatic)
    assert (job.status, job.outcome_code) == (JobStatus.failed, "canvas_points_missing")
    assert (await world.job(manual)).status == JobStatus.delivered
    assert (await world.cell(world.students[1]))["score"] == "0"
    assert len(await world.score_posts()) == 1


async def test_one_token_serves_hundreds_of_deliveries(
    lti_context: Any, sandbox: RunningSandbox
) -> None:
    await sandbox.admin.set_throttle(enabled=False)
    world = await make_world(lti_context, sandbox, students=200)
    engine = DeliveryEngine(lti_context, policy=quick_policy(concurrency=64))
    await world.enqueue_many(world.students, score=8)
    await world.settle(engine)
    jobs = await world.jobs()
    assert {job.status for job in jobs} == {JobStatus.delivered}
    assert len(jobs) == 200
    assert await sandbox.admin.token_grants(world.client_id) == 1


async def test_an_expired_token_is_replaced_before_use(
    world: World, engine: DeliveryEngine
) -> None:
    await world.enqueue(world.students[0])
    await engine.drain()
    world.clock.advance(3500)  # past the refresh point of the one-hour token
    await world.enqueue(world.students[1])
    await engine.drain()
    assert await world.sandbox.admin.token_grants(world.client_id) == 2
    statuses = [post["status"] for post in await world.score_posts()]
    assert statuses == [200, 200]


async def test_a_token_canvas_rejects_is_refreshed_once_and_the_score_resent(
    world: World, engine: DeliveryEngine
) -> None:
    await world.enqueue(world.students[0])
    await engine.drain()
    world.sandbox.state.access_token_secret = secrets.token_bytes(32)  # Canvas rotated it
    await world.enqueue_many(world.students[1:])
    await engine.drain()
    assert {job.status for job in await world.jobs()} == {JobStatus.delivered}
    assert await world.sandbox.admin.token_grants(world.client_id) == 2
    for student in world.students:
        assert (await world.cell(student))["score"] == "7"


@pytest.mark.parametrize(
    ("fault", "expected_outcome", "expected_status"),
    [
        ({"kind": "error", "status": 500}, "platform_error", 500),
        ({"kind": "error", "status": 503}, "platform_error", 503),
    ],
)
async def test_transient_failures_are_retried_until_delivered(
    world: World,
    engine: DeliveryEngine,
    fault: dict[str, Any],
    expected_outcome: str,
    expected_status: int | None,
) -> None:
    world.clock.freeze()  # the retry is due only when the test moves the clock
    student = world.students[0]
    await world.sandbox.admin.add_fault(path=SCORES, method="POST", remaining=2, **fault)
    job_id = await world.enqueue(student)

    await engine.drain()
    job = await world.job(job_id)
    assert job.status == JobStatus.pending
    assert job.next_attempt_at > world.clock()  # backoff, stored
    await world.settle(engine)

    attempts = await world.attempts(job_id)
    assert [(a.outcome, a.http_status) for a in attempts] == [
        (expected_outcome, expected_status),
        (expected_outcome, expected_status),
        ("delivered", 200),
    ]
    job = await world.job(job_id)
    assert (job.status, job.new_submission, job.maybe_delivered) == (
        JobStatus.delivered,
        True,
        False,
    )
    posts = await world.score_posts()
    assert len(posts) == 3
    # The sandbox logs no body for a request its fault answered before reading it.
    assert new_submission_flags([post for post in posts if post["request_body"]]) == [True]
    cell = await world.cell(student)
    assert (cell["score"], cell["attempt"]) == ("7", 1)


@pytest.mark.parametrize(
    ("fault", "expected_outcome", "expected_status"),
    [
        ({"kind": "throttle"}, "throttled", 403),
        ({"kind": "too_many_requests", "retry_after": 1}, "rate_limited", 429),
    ],
)
async def test_a_throttled_job_waits_in_its_lane_and_is_delivered_in_the_same_attempt(
    world: World,
    engine: DeliveryEngine,
    fault: dict[str, Any],
    expected_outcome: str,
    expected_status: int,
) -> None:
    student = world.students[0]
    await world.sandbox.admin.add_fault(path=SCORES, method="POST", remaining=2, **fault)
    job_id = await world.enqueue(student)

    await engine.drain()  # no backoff in the queue: the lane held the job until Canvas took it

    job = await world.job(job_id)
    assert job.status == JobStatus.delivered
    attempts = await world.attempts(job_id)
    assert [(a.outcome, a.http_status) for a in attempts] == [
        (expected_outcome, expected_status),
        (expected_outcome, expected_status),
        ("delivered", 200),
    ]
    assert (job.attempt_count, job.tries_since_queued) == (3, 1)  # throttling is not a try
    assert (await world.cell(student))["score"] == "7"


async def test_retry_after_is_honoured(world: World, engine: DeliveryEngine) -> None:
    world.clock.freeze()
    await world.sandbox.admin.add_fault(
        "too_many_requests", path=SCORES, method="POST", remaining=1, retry_after=30
    )
    job_id = await world.enqueue(world.students[0])
    await engine.drain()
    first = (await world.attempts(job_id))[0]
    job = await world.job(job_id)
    # Longer than a lane pauses: the job waits in the queue, where a restart keeps the time.
    assert job.next_attempt_at - first.finished_at == timedelta(seconds=30)
    world.clock.advance(29)
    await engine.drain()
    assert (await world.job(job_id)).status == JobStatus.pending
    world.clock.advance(2)
    await engine.drain()
    assert (await world.job(job_id)).status == JobStatus.delivered


async def test_after_an_answer_lost_in_transit_the_result_shows_the_grade_landed(
    world: World, engine: DeliveryEngine
) -> None:
    student = world.students[0]
    # Canvas applies the score, then the answer arrives after the client gave up.
    await world.sandbox.admin.add_fault(
        "latency", path=SCORES, method="POST", remaining=1, delay_ms=1500, phase="after"
    )
    job_id = await world.enqueue(student)
    await world.settle(engine)
    job = await world.job(job_id)
    assert (job.status, job.outcome_code) == (JobStatus.delivered, "delivered_earlier")
    assert job.maybe_delivered and job.new_submission
    outcomes = [(a.outcome, a.http_status) for a in await world.attempts(job_id)]
    assert outcomes == [("timeout", None), ("delivered_earlier", 200)]
    # The student's result was read (with a token for that scope) instead of posting again.
    assert new_submission_flags(await logged_posts(world, 1)) == [True]
    reads = await world.sandbox.admin.requests(path_contains="/results", method="GET")
    assert [read["status"] for read in reads] == [200]
    cell = await world.cell(student)
    assert (cell["score"], cell["attempt"], cell["submission_type"]) == (
        "7",
        1,
        "basic_lti_launch",
    )


async def test_a_post_lost_before_reaching_canvas_is_resent_opening_the_submission(
    world: World, engine: DeliveryEngine
) -> None:
    student = world.students[0]
    # The connection resets before Canvas reads the request: nothing lands, twice.
    await world.sandbox.admin.add_fault("drop", path=SCORES, method="POST", remaining=2)
    job_id = await world.enqueue(student)
    await world.settle(engine)

    outcomes = [(a.outcome, a.http_status) for a in await world.attempts(job_id)]
    assert outcomes == [
        ("connection_error", None),
        ("submission_absent", 200),
        ("connection_error", None),
        ("submission_absent", 200),
        ("delivered", 200),
    ]
    job = await world.job(job_id)
    assert (job.status, job.new_submission, job.tries_since_queued) == (
        JobStatus.delivered,
        True,
        3,  # result reads are not tries
    )
    posts = [post for post in await world.score_posts() if post["request_body"]]
    assert new_submission_flags(posts)[-1] is True
    # A grade with its submission: SpeedGrader opens the student's work.
    cell = await world.cell(student)
    assert (cell["score"], cell["attempt"], cell["submission_type"], cell["url"]) == (
        "7",
        1,
        "basic_lti_launch",
        RESPONSE_URL.format(student=student),
    )


async def test_when_the_result_cannot_be_read_the_resend_opens_no_new_submission(
    world: World, engine: DeliveryEngine
) -> None:
    admin, student = world.sandbox.admin, world.students[0]
    key = await admin.call("GET", f"/developer-keys/{world.client_id}")
    scopes = [scope for scope in key["scopes"] if not scope.endswith("/result.readonly")]
    await admin.update_developer_key(world.client_id, scopes=scopes)
    await admin.add_fault("drop", path=SCORES, method="POST", remaining=1)
    job_id = await world.enqueue(student)
    await world.settle(engine)

    attempts = await world.attempts(job_id)
    assert [a.outcome for a in attempts] == ["connection_error", "result_unreadable", "delivered"]
    assert (attempts[1].message or "").startswith("scope_not_granted")
    assert (await world.job(job_id)).status == JobStatus.delivered
    posts = [post for post in await world.score_posts() if post["request_body"]]
    assert new_submission_flags(posts)[-1] is False  # as before the check existed
    assert (await world.cell(student))["score"] == "7"


async def test_a_second_send_of_a_submission_whose_first_send_was_lost_opens_it_once(
    world: World, engine: DeliveryEngine
) -> None:
    student = world.students[0]
    submitted_at = world.clock() - timedelta(minutes=5)
    world.clock.freeze()  # the retry is due only when the test moves the clock
    await world.sandbox.admin.add_fault("drop", path=SCORES, method="POST", remaining=1)
    first = await world.enqueue(student, score=5, submitted_at=submitted_at)
    await engine.drain()  # lost: unknown outcome, waiting for its retry
    world.clock.advance(0.001)
    second = await world.enqueue(student, score=9, submitted_at=submitted_at)
    job = await world.job(second)
    assert (job.new_submission, job.submission_unconfirmed) == (True, True)

    await world.settle(engine)

    assert (await world.job(first)).status == JobStatus.superseded
    assert [a.outcome for a in await world.attempts(second)] == ["submission_absent", "delivered"]
    cell = await world.cell(student)
    assert (cell["score"], cell["attempt"], cell["submission_type"]) == (
        "9",
        1,
        "basic_lti_launch",
    )


async def test_a_second_send_after_a_first_that_landed_unseen_updates_the_grade(
    world: World, engine: DeliveryEngine
) -> None:
    student = world.students[0]
    submitted_at = world.clock() - timedelta(minutes=5)
    world.clock.freeze()  # the retry is due only when the test moves the clock
    await world.sandbox.admin.add_fault(
        "latency", path=SCORES, method="POST", remaining=1, delay_ms=1500, phase="after"
    )
    await world.enqueue(student, score=5, submitted_at=submitted_at)
    await engine.drain()  # landed, answer lost
    world.clock.advance(0.001)
    second = await world.enqueue(student, score=9, submitted_at=submitted_at)

    await world.settle(engine)

    assert [a.outcome for a in await world.attempts(second)] == ["submission_found", "delivered"]
    assert new_submission_flags(await logged_posts(world, 2)) == [True, False]
    cell = await world.cell(student)
    assert (cell["score"], cell["attempt"]) == ("9", 1)


async def test_a_line_item_read_that_fails_briefly_is_retried_within_the_attempt(
    world: World, engine: DeliveryEngine
) -> None:
    await world.sandbox.admin.add_fault(
        "error", path=r"/line_items/\w+$", method="GET", remaining=2, status=502
    )
    job_id = await world.enqueue(world.students[0])
    await engine.drain()
    assert (await world.job(job_id)).status == JobStatus.delivered


@pytest.mark.parametrize(
    ("break_it", "code"),
    [
        ("delete_assignment", "assignment_not_linked"),
        ("conclude_course", "course_concluded"),
        ("delete_course", "course_deleted"),
        ("unenroll_student", "student_not_in_course"),
        ("deactivate_key", "developer_key_inactive"),
        ("disable_key_in_account", "developer_key_not_enabled"),
        ("uninstall_tool", "tool_not_installed"),
        ("withdraw_score_scope", "scope_not_granted"),
    ],
)
async def test_permanent_errors_fail_at_once_with_their_code(
    world: World, engine: DeliveryEngine, break_it: str, code: str
) -> None:
    admin, student = world.sandbox.admin, world.students[0]
    if break_it == "delete_assignment":
        await admin.delete_assignment(world.assignment_id)
    elif break_it == "conclude_course":
        await admin.set_course_state(world.course_id, "concluded")
    elif break_it == "delete_course":
        await admin.set_course_state(world.course_id, "deleted")
    elif break_it == "unenroll_student":
        await admin.set_enrollment_state(world.course_id, student, "inactive")
    elif break_it == "deactivate_key":
        await admin.update_developer_key(world.client_id, active=False)
    elif break_it == "disable_key_in_account":
        await admin.update_developer_key(world.client_id, enabled_in_account=False)
    elif break_it == "uninstall_tool":
        await admin.uninstall_tool(world.course_id, world.client_id)
    elif break_it == "withdraw_score_scope":
        key = await admin.call("GET", f"/developer-keys/{world.client_id}")
        scopes = [scope for scope in key["scopes"] if not scope.endswith("/score")]
        await admin.update_developer_key(world.client_id, scopes=scopes)
    job_id = await world.enqueue(student)

    await engine.drain()

    job = await world.job(job_id)
    assert (job.status, job.outcome_code) == (JobStatus.failed, code)
    assert job.platform_message
    assert job.finished_at is not None
    assert len(await world.attempts(job_id)) == 1


async def test_the_platform_message_is_kept_verbatim(world: World, engine: DeliveryEngine) -> None:
    await world.sandbox.admin.set_course_state(world.course_id, "concluded")
    job_id = await world.enqueue(world.students[0])
    await engine.drain()
    job = await world.job(job_id)
    assert job.platform_message == (
        "This course has concluded. AGS requests will no longer be accepted for this course."
    )
    [attempt] = await world.attempts(job_id)
    assert (attempt.http_status, attempt.outcome) == (422, "course_concluded")
    assert attempt.message == job.platform_message


async def test_retries_stop_at_the_deadline(world: World, engine: DeliveryEngine) -> None:
    await world.sandbox.admin.add_fault("error", path=SCORES, method="POST", status=500)
    job_id = await world.enqueue(world.students[0], deadline=timedelta(seconds=30))
    await world.settle(engine)
    job = await world.job(job_id)
    assert (job.status, job.outcome_code) == (JobStatus.failed, "platform_unavailable")
    assert job.platform_message == "An error occurred."
    attempts = await world.attempts(job_id)
    assert len(attempts) >= 3
    assert all(attempt.started_at < job.deadline_at for attempt in attempts)


async def test_a_stale_timestamp_leaves_the_newer_grade_and_supersedes_the_job(
    world: World, engine: DeliveryEngine
) -> None:
    student = world.students[0]
    now = world.clock()
    newer = await world.enqueue(student, score=9, timestamp=now)
    await engine.drain()
    # An automatic grade produced before the one delivered keeps its time (a manual send is
    # always after every earlier grade: see score_timestamp_after).
    older = await world.enqueue(
        student, score=3, timestamp=now - timedelta(minutes=1), kind=JobKind.automatic
    )
    await engine.drain()
    job = await world.job(older)
    assert (job.status, job.outcome_code) == (JobStatus.superseded, "superseded")
    assert job.superseded_by == newer, "the newer grade of ours that is there"
    assert "before last updated timestamp" in (job.platform_message or "")
    assert (await world.cell(student))["score"] == "9"


async def test_exhausted_attempts_are_resent_without_a_new_submission(
    lti_context: Any, sandbox: RunningSandbox
) -> None:
    await sandbox.admin.set_throttle(enabled=False)
    world = await make_world(lti_context, sandbox, allowed_attempts=1)
    engine = DeliveryEngine(lti_context, policy=quick_policy())
    student = world.students[0]
    await world.enqueue(student, score=4, submitted_at=world.clock() - timedelta(hours=2))
    await engine.drain()
    world.clock.advance(1)
    second = await world.enqueue(student, score=8, submitted_at=world.clock())
    assert (await world.job(second)).new_submission  # a new submission of the student
    await engine.drain()
    assert new_submission_flags(await world.score_posts()) == [True, True, False]
    job = await world.job(second)
    assert (job.status, job.new_submission) == (JobStatus.delivered, False)
    outcomes = [(a.http_status, a.outcome) for a in await world.attempts(second)]
    assert outcomes == [(422, "attempts_exhausted"), (200, "delivered")]
    cell = await world.cell(student)
    assert (cell["score"], cell["attempt"]) == ("8", 1)


async def test_a_deactivated_platform_fails_its_jobs(world: World, engine: DeliveryEngine) -> None:
    async with transaction(world.context.sessions) as session:
        platform = await session.get(Platform, world.platform.id)
        assert platform is not None
        platform.active = False
    job_id = await world.enqueue(world.students[0])
    await engine.drain()
    job = await world.job(job_id)
    assert (job.status, job.outcome_code) == (JobStatus.failed, "platform_not_registered")
    assert await world.score_posts() == []


async def test_backoff_survives_a_restart(world: World, lti_context: Any) -> None:
    world.clock.freeze()  # the retry is due only when the test moves the clock
    await world.sandbox.admin.add_fault("error", path=SCORES, method="POST", remaining=1)
    job_id = await world.enqueue(world.students[0])
    first = DeliveryEngine(lti_context, policy=quick_policy())
    await first.drain()
    due = (await world.job(job_id)).next_attempt_at
    assert due > world.clock()
    restarted = DeliveryEngine(lti_context, policy=quick_policy())
    await restarted.drain()
    assert (await world.job(job_id)).status == JobStatus.pending
    world.clock.advance((due - world.clock()).total_seconds() + 0.01)
    await restarted.drain()
    assert (await world.job(job_id)).status == JobStatus.delivered


async def test_token_endpoint_refusals_fail_jobs_without_posting(
    world: World, engine: DeliveryEngine
) -> None:
    async with transaction(world.context.sessions) as session:
        platform = await session.get(Platform, world.platform.id)
        assert platform is not None
        platform.token_audience = "https://elsewhere.example/login/oauth2/token"
    job_ids = await world.enqueue_many(world.students)
    await engine.drain()
    for job_id in job_ids:
        job = await world.job(job_id)
        assert (job.status, job.outcome_code) == (JobStatus.failed, "client_assertion_rejected")
        assert job.platform_message == "invalid_request: the 'aud' is invalid"
    assert await world.score_posts() == []


async def test_after_an_operator_retry_the_backoff_starts_small_again(
    world: World, lti_context: AppContext
) -> None:
    # A job's own backoff: the host's rests (which would stretch it) are off here.
    lanes = LanePolicy(throttle_pause_max=2.0, failures_to_rest=1_000_000)
    engine = DeliveryEngine(lti_context, policy=quick_policy(lanes=lanes))
    student = world.students[0]
    world.clock.freeze()  # the retry is due only when the test moves the clock
    await world.sandbox.admin.add_fault("error", path=SCORES, method="POST", status=500)
    job_id = await world.enqueue(student, deadline=timedelta(seconds=60))
    await world.settle(engine)
    failed = await world.job(job_id)
    assert (failed.status, failed.outcome_code) == (JobStatus.failed, "platform_unavailable")
    assert failed.attempt_count >= 4  # the backoff had grown towards its cap

    async with world.context.sessions() as session:
        await retry_job(session, job_id, now=world.clock(), deadline=timedelta(hours=1))
    await engine.drain()  # Canvas still fails: the first try of the new cycle

    job = await world.job(job_id)
    last = (await world.attempts(job_id))[-1]
    assert (job.status, job.attempt_count, job.tries_since_queued) == (
        JobStatus.pending,
        failed.attempt_count + 1,
        1,
    )
    first_delay = engine.policy.backoff_first
    assert job.next_attempt_at - last.finished_at <= timedelta(seconds=first_delay)

    await world.sandbox.admin.clear_faults()
    await world.settle(engine)
    assert (await world.job(job_id)).status == JobStatus.delivered
    # The history still counts: another grade of the same submission is an update.
    again = await world.enqueue(student, score=9, submitted_at=job.submitted_at)
    assert (await world.job(again)).new_submission is False
