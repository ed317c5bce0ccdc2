"""Why a grade is not sent: the stable reason codes and what a teacher reads for each.

The one place these codes and messages live (SPEC §2.1, §2.2). Automatic passback answers
with every unmet condition; manual passback uses the same codes for rows it cannot send.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class ReasonCode(StrEnum):
    license_required = "license_required"
    auto_passback_off = "auto_passback_off"
    manual_grading_required = "manual_grading_required"
    not_launched_from_lms = "not_launched_from_lms"
    not_a_canvas_assignment = "not_a_canvas_assignment"
    platform_not_registered = "platform_not_registered"
    not_submitted = "not_submitted"
    not_first_attempt = "not_first_attempt"
    already_passed_back = "already_passed_back"
    changed_after_submission = "changed_after_submission"
    canvas_points_missing = "canvas_points_missing"
    not_started = "not_started"


REASON_MESSAGES: Mapping[ReasonCode, str] = MappingProxyType(
    {
        ReasonCode.license_required: (
            "Grade passback needs a School & District license; this organization does not have one."
        ),
        ReasonCode.auto_passback_off: (
            "Automatic grade passback is turned off for this formative. Turn it on in the "
            "formative's settings, or send grades with manual passback."
        ),
        ReasonCode.manual_grading_required: (
            "This formative has questions that are scored by hand or with a rubric, so grades "
            "are not sent automatically. Grade them, then use manual passback."
        ),
        ReasonCode.not_launched_from_lms: (
            "The student did not open this formative from Canvas, so Formative does not know "
            "where the grade goes. Students must open the formative from the Canvas assignment."
        ),
        ReasonCode.not_a_canvas_assignment: (
            "The student opened this formative from Canvas, but not from a graded Canvas "
            "assignment (no gradebook column). Add the formative as a Canvas assignment."
        ),
        ReasonCode.platform_not_registered: (
            "The Canvas the student came from is not (or no longer) connected to Formative. "
            "An administrator must register or reactivate it."
        ),
        ReasonCode.not_submitted: (
            "The student's work has not been fully submitted yet; grades are sent "
            "automatically only once it is submitted."
        ),
        ReasonCode.not_first_attempt: (
            "Only the first attempt is passed back automatically; use manual passback for "
            "later attempts."
        ),
        ReasonCode.already_passed_back: (
            "This student's grade was already passed back automatically to this Canvas "
            "assignment; use manual passback to send an update."
        ),
        ReasonCode.changed_after_submission: (
            "The score changed after the work was submitted (answers completed or edited, a "
            "teacher adjustment, or an answer-key or point change). Changes after submission "
            "need manual passback."
        ),
        ReasonCode.canvas_points_missing: (
            "The Canvas assignment has no points value, so no grade was sent automatically. "
            "Give the assignment points in Canvas, then use manual passback."
        ),
        ReasonCode.not_started: (
            "The student has not started this formative yet, so there is no grade to send."
        ),
    }
)


@dataclass(frozen=True)
class Reason:
    """A reason code with the sentence a teacher reads."""

    code: ReasonCode
    message: str


def reason(code: ReasonCode) -> Reason:
    return Reason(code, REASON_MESSAGES[code])
