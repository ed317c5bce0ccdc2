"""The automatic-passback rules (SPEC §2.1): every condition, alone and combined."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.grading.eligibility import (
    EventType,
    LaunchFacts,
    QuestionGrading,
    SubmissionFacts,
    all_auto_graded,
    automatic_passback,
)
from app.grading.reasons import REASON_MESSAGES, ReasonCode

SUBMITTED = SubmissionFacts(
    event_type=EventType.submitted,
    license="school_district",
    auto_passback=True,
    all_auto_graded=True,
    attempt=1,
    work_submitted=True,
)
FROM_CANVAS_ASSIGNMENT = LaunchFacts(
    gradable=True, platform_active=True, automatic_job_exists=False
)


def codes(submission: SubmissionFacts, launch: LaunchFacts | None) -> list[ReasonCode]:
    return [reason.code for reason in automatic_passback(submission, launch).reasons]


def test_first_full_submission_from_a_canvas_assignment_is_eligible() -> None:
    decision = automatic_passback(SUBMITTED, FROM_CANVAS_ASSIGNMENT)
    assert decision.eligible
    assert decision.reasons == ()


def test_a_submission_by_a_teacher_on_the_students_behalf_counts_as_submitted() -> None:
    # Who submitted is not a condition: the facts only say the work is submitted.
    assert automatic_passback(SUBMITTED, FROM_CANVAS_ASSIGNMENT).eligible


@pytest.mark.parametrize(
    ("submission", "launch", "expected"),
    [
        (replace(SUBMITTED, license="teacher_pro"), FROM_CANVAS_ASSIGNMENT, "license_required"),
        (replace(SUBMITTED, license=""), FROM_CANVAS_ASSIGNMENT, "license_required"),
        (replace(SUBMITTED, auto_passback=False), FROM_CANVAS_ASSIGNMENT, "auto_passback_off"),
        (
            replace(SUBMITTED, all_auto_graded=False),
            FROM_CANVAS_ASSIGNMENT,
            "manual_grading_required",
        ),
        (SUBMITTED, None, "not_launched_from_lms"),
        (
            SUBMITTED,
            replace(FROM_CANVAS_ASSIGNMENT, gradable=False),
            "not_a_canvas_assignment",
        ),
        (
            SUBMITTED,
            replace(FROM_CANVAS_ASSIGNMENT, platform_active=False),
            "platform_not_registered",
        ),
        (replace(SUBMITTED, work_submitted=False), FROM_CANVAS_ASSIGNMENT, "not_submitted"),
        (replace(SUBMITTED, attempt=2), FROM_CANVAS_ASSIGNMENT, "not_first_attempt"),
        (
            SUBMITTED,
            replace(FROM_CANVAS_ASSIGNMENT, automatic_job_exists=True),
            "already_passed_back",
        ),
    ],
)
def test_each_unmet_condition_alone_gives_exactly_its_reason(
    submission: SubmissionFacts, launch: LaunchFacts | None, expected: str
) -> None:
    decision = automatic_passback(submission, launch)
    assert not decision.eligible
    assert [reason.code for reason in decision.reasons] == [expected]
    assert decision.reasons[0].message == REASON_MESSAGES[ReasonCode(expected)]


def test_a_started_attempt_is_not_submitted() -> None:
    started = replace(SUBMITTED, event_type=EventType.started, work_submitted=False)
    assert codes(started, FROM_CANVAS_ASSIGNMENT) == ["not_submitted"]


def test_a_started_event_is_not_submitted_even_if_the_facts_say_otherwise() -> None:
    started = replace(SUBMITTED, event_type=EventType.started, work_submitted=True)
    assert codes(started, FROM_CANVAS_ASSIGNMENT) == ["not_submitted"]


def test_a_change_after_submission_is_not_passed_back_automatically() -> None:
    updated = replace(SUBMITTED, event_type=EventType.updated)
    assert codes(updated, FROM_CANVAS_ASSIGNMENT) == ["changed_after_submission"]


def test_a_change_before_submission_lists_both_reasons() -> None:
    updated = replace(SUBMITTED, event_type=EventType.updated, work_submitted=False)
    assert codes(updated, FROM_CANVAS_ASSIGNMENT) == ["not_submitted", "changed_after_submission"]


def test_a_change_after_the_automatic_passback_lists_both_reasons() -> None:
    updated = replace(SUBMITTED, event_type=EventType.updated)
    launch = replace(FROM_CANVAS_ASSIGNMENT, automatic_job_exists=True)
    assert codes(updated, launch) == ["already_passed_back", "changed_after_submission"]


def test_without_a_launch_only_the_missing_launch_is_reported_about_canvas() -> None:
    assert codes(replace(SUBMITTED, attempt=3), None) == [
        "not_launched_from_lms",
        "not_first_attempt",
    ]


def test_a_launch_without_a_line_item_cannot_have_been_passed_back() -> None:
    launch = LaunchFacts(gradable=False, platform_active=True, automatic_job_exists=True)
    assert codes(SUBMITTED, launch) == ["not_a_canvas_assignment"]


def test_an_inactive_platform_and_a_course_navigation_launch_are_both_reported() -> None:
    launch = LaunchFacts(gradable=False, platform_active=False, automatic_job_exists=False)
    assert codes(SUBMITTED, launch) == ["not_a_canvas_assignment", "platform_not_registered"]


def test_every_unmet_condition_is_reported_in_the_order_of_the_specification() -> None:
    nothing_holds = SubmissionFacts(
        event_type=EventType.updated,
        license="basic",
        auto_passback=False,
        all_auto_graded=False,
        attempt=2,
        work_submitted=False,
    )
    launch = LaunchFacts(gradable=True, platform_active=False, automatic_job_exists=True)
    assert codes(nothing_holds, launch) == [
        "license_required",
        "auto_passback_off",
        "manual_grading_required",
        "platform_not_registered",
        "not_submitted",
        "not_first_attempt",
        "already_passed_back",
        "changed_after_submission",
    ]


def test_canvas_points_are_left_to_delivery() -> None:
    # The engine cannot know the line item's points; delivery decides canvas_points_missing.
    launch = LaunchFacts(gradable=True, platform_active=True, automatic_job_exists=False)
    assert "canvas_points_missing" not in codes(SUBMITTED, launch)
    assert ReasonCode.canvas_points_missing in REASON_MESSAGES


@pytest.mark.parametrize(
    ("gradings", "expected"),
    [
        ([], True),
        ([QuestionGrading.auto, QuestionGrading.auto], True),
        ([QuestionGrading.auto, QuestionGrading.manual], False),
        ([QuestionGrading.rubric], False),
    ],
)
def test_only_formatives_scored_entirely_automatically_qualify(
    gradings: list[QuestionGrading], expected: bool
) -> None:
    assert all_auto_graded(gradings) is expected


def test_every_reason_code_has_a_distinct_teacher_message() -> None:
    assert set(REASON_MESSAGES) == set(ReasonCode)
    messages = list(REASON_MESSAGES.values())
    assert all(message.strip() for message in messages)
    assert len(set(messages)) == len(messages)


submissions = st.builds(
    SubmissionFacts,
    event_type=st.sampled_from(EventType),
    license=st.sampled_from(["school_district", "teacher_pro", "free", ""]),
    auto_passback=st.booleans(),
    all_auto_graded=st.booleans(),
    attempt=st.integers(min_value=1, max_value=5),
    work_submitted=st.booleans(),
)
launches = st.none() | st.builds(
    LaunchFacts,
    gradable=st.booleans(),
    platform_active=st.booleans(),
    automatic_job_exists=st.booleans(),
)
SPEC_ORDER = list(ReasonCode)


@given(submissions, launches)
def test_any_combination_is_eligible_exactly_when_every_condition_holds(
    submission: SubmissionFacts, launch: LaunchFacts | None
) -> None:
    decision = automatic_passback(submission, launch)
    every_condition_holds = (
        submission.license == "school_district"
        and submission.auto_passback
        and submission.all_auto_graded
        and launch is not None
        and launch.gradable
        and launch.platform_active
        and submission.event_type is EventType.submitted
        and submission.work_submitted
        and submission.attempt == 1
        and not launch.automatic_job_exists
    )
    assert decision.eligible is every_condition_holds
    found = [reason.code for reason in decision.reasons]
    assert found == sorted(found, key=SPEC_ORDER.index)
    assert len(found) == len(set(found))
    assert (ReasonCode.not_launched_from_lms in found) is (launch is None)
    assert (ReasonCode.changed_after_submission in found) is (
        submission.event_type is EventType.updated
    )
