"""Whether a submission event is passed back automatically (SPEC §2.1), and every reason not.

Pure: the caller gathers the facts (the event, the student's launch, earlier automatic jobs)
and gets back all unmet conditions, in the order of the specification's table. Whether the
Canvas assignment has points (`canvas_points_missing`) is known only when delivering, from
the line item itself, so it is not decided here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.grading.reasons import Reason, ReasonCode, reason

PASSBACK_LICENSE = "school_district"
FIRST_ATTEMPT = 1


class EventType(StrEnum):
    started = "started"
    submitted = "submitted"
    updated = "updated"


class QuestionGrading(StrEnum):
    auto = "auto"
    manual = "manual"
    rubric = "rubric"


def all_auto_graded(gradings: list[QuestionGrading]) -> bool:
    """Every question is scored automatically (no manual scoring, no rubric)."""
    return all(grading is QuestionGrading.auto for grading in gradings)


@dataclass(frozen=True)
class SubmissionFacts:
    """What the event says about the formative and the student's work."""

    event_type: EventType
    license: str
    auto_passback: bool
    all_auto_graded: bool
    attempt: int
    work_submitted: bool


@dataclass(frozen=True)
class LaunchFacts:
    """What the student's Canvas launch into the formative tells, if there was one.

    `gradable`: the launch carried an AGS line item and the score scope. `platform_active`:
    its registration still exists and is active. `automatic_job_exists`: an automatic
    passback was already queued for this student and line item.
    """

    gradable: bool
    platform_active: bool
    automatic_job_exists: bool


@dataclass(frozen=True)
class Eligibility:
    reasons: tuple[Reason, ...]

    @property
    def eligible(self) -> bool:
        return not self.reasons


def automatic_passback(submission: SubmissionFacts, launch: LaunchFacts | None) -> Eligibility:
    """Every unmet condition of automatic passback for this event (none: send it)."""
    unmet: list[ReasonCode] = []
    if submission.license != PASSBACK_LICENSE:
        unmet.append(ReasonCode.license_required)
    if not submission.auto_passback:
        unmet.append(ReasonCode.auto_passback_off)
    if not submission.all_auto_graded:
        unmet.append(ReasonCode.manual_grading_required)
    if launch is None:
        unmet.append(ReasonCode.not_launched_from_lms)
    else:
        if not launch.gradable:
            unmet.append(ReasonCode.not_a_canvas_assignment)
        if not launch.platform_active:
            unmet.append(ReasonCode.platform_not_registered)
    if submission.event_type is EventType.started or not submission.work_submitted:
        unmet.append(ReasonCode.not_submitted)
    if submission.attempt != FIRST_ATTEMPT:
        unmet.append(ReasonCode.not_first_attempt)
    if launch is not None and launch.gradable and launch.automatic_job_exists:
        unmet.append(ReasonCode.already_passed_back)
    if submission.event_type is EventType.updated:
        unmet.append(ReasonCode.changed_after_submission)
    return Eligibility(tuple(reason(code) for code in unmet))
