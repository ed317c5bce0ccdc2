"""Percent and Canvas-score arithmetic, in exact decimals.

Canvas stores grade = scoreGiven × lineItemMax ÷ scoreMaximum. We always send
scoreMaximum = the line item's current points, so the factor is 1 and the Canvas grade is
exactly the scoreGiven we computed: percent × points, rounded half-up to the cent.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from enum import StrEnum

CENT = Decimal("0.01")
HUNDRED = Decimal(100)
ZERO = Decimal(0)
ONE = Decimal(1)
# Enough digits that a fraction's rounding error can never reach the cent of any real score.
_EXACT = Context(prec=50, rounding=ROUND_HALF_UP)


class GradeMode(StrEnum):
    grades = "grades"
    complete_incomplete = "complete_incomplete"


def fraction(score: Decimal, max_score: Decimal) -> Decimal:
    """score ÷ max_score as a decimal fraction (1 = 100%); a maximum of 0 gives 0."""
    if max_score == ZERO:
        return ZERO
    return _EXACT.divide(score, max_score)


def percent(score: Decimal, max_score: Decimal) -> Decimal:
    """The percent a teacher reads (85.5 for 85.5%), rounded to hundredths."""
    return (_EXACT.multiply(fraction(score, max_score), HUNDRED)).quantize(CENT, ROUND_HALF_UP)


def canvas_score(grade_fraction: Decimal, canvas_points: Decimal) -> Decimal:
    """The grade Canvas will show: fraction × points, to the cent."""
    return _EXACT.multiply(grade_fraction, canvas_points).quantize(CENT, ROUND_HALF_UP)


@dataclass(frozen=True)
class GradeSpec:
    """What a job should put in Canvas, independent of the points at sending time.

    Exactly one source applies, in this order: `override_points` (a Canvas score the teacher
    typed), `override_percent` (a percent, may exceed 100), complete/incomplete (`complete`),
    else the Formative `score` ÷ `max_score`.
    """

    mode: GradeMode = GradeMode.grades
    score: Decimal | None = None
    max_score: Decimal | None = None
    override_percent: Decimal | None = None
    override_points: Decimal | None = None
    complete: bool | None = None


@dataclass(frozen=True)
class ScoreToSend:
    score_given: Decimal
    score_maximum: Decimal
    activity_progress: str


def grade_fraction(spec: GradeSpec) -> Decimal:
    """The fraction of the Canvas points the student earns (1 = 100%)."""
    if spec.override_percent is not None:
        return _EXACT.divide(spec.override_percent, HUNDRED)
    if spec.mode is GradeMode.complete_incomplete:
        return ONE if spec.complete else ZERO
    if spec.score is None or spec.max_score is None:
        return ZERO
    return fraction(spec.score, spec.max_score)


def score_to_send(spec: GradeSpec, canvas_points: Decimal) -> ScoreToSend:
    """The AGS scoreGiven/scoreMaximum for the line item's current points.

    With 0 points Canvas accepts scoreMaximum 0 only when the line item's maximum is 0 too,
    and then does not scale: sending 0/0 makes the grade 0.
    """
    incomplete = spec.mode is GradeMode.complete_incomplete and not spec.complete
    progress = "Submitted" if incomplete and spec.override_percent is None else "Completed"
    if spec.override_points is not None:
        return ScoreToSend(spec.override_points, canvas_points, progress)
    if canvas_points == ZERO:
        return ScoreToSend(ZERO, ZERO, progress)
    return ScoreToSend(canvas_score(grade_fraction(spec), canvas_points), canvas_points, progress)
