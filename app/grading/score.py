"""Percent and Canvas-score arithmetic, exact (SPEC §2.3).

Canvas stores grade = scoreGiven × lineItemMax ÷ scoreMaximum. We always send
scoreMaximum = the line item's current points, so the factor is 1 and the Canvas grade is
exactly the scoreGiven we computed: percent × points, rounded half-up to the cent.

The rounding is done on exact rationals, so a product that lands exactly on a half cent
(1/3 of 0.015 points) rounds up as it should instead of falling a hair short.

What the teacher page recomputes in the browser (it must give the same numbers as a send):
- percent shown = score ÷ maximum × 100, rounded half-up to hundredths (maximum 0 → 0);
- "will send" with no override, grades mode = score ÷ maximum × Canvas points, computed
  exactly and rounded once, half-up to the cent (not from the rounded percent);
- a percent override p = p ÷ 100 × Canvas points, rounded half-up to the cent;
- complete/incomplete = the Canvas points (complete) or 0 (incomplete);
- a points override = the points as typed (2 places at most), except on a 0-point
  assignment, where every grade is 0 (any percentage of zero is zero);
- Canvas points 0 → 0 whatever the source.
Half-up means away from zero at exactly half a cent: 8.345 → 8.35. The browser should do
this on integers of thousandths (or a decimal library), never on binary floats alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from enum import StrEnum
from fractions import Fraction

CENT = Decimal("0.01")
HUNDRED = Decimal(100)
ZERO = Decimal(0)
ONE = Decimal(1)
# Wide enough for any NUMERIC(30, 12) the store holds, so no step below rounds unasked.
_EXACT = Context(prec=60, rounding=ROUND_HALF_UP)


class GradeMode(StrEnum):
    grades = "grades"
    complete_incomplete = "complete_incomplete"


def _to_cents(value: Fraction) -> Decimal:
    """An exact rational, rounded half-up (away from zero) to hundredths."""
    whole_cents = math.floor(abs(value) * 100 + Fraction(1, 2))
    signed = -whole_cents if value < 0 else whole_cents
    return _EXACT.divide(Decimal(signed), HUNDRED).quantize(CENT, context=_EXACT)


def _ratio(score: Decimal, max_score: Decimal) -> Fraction:
    return Fraction(0) if max_score == ZERO else Fraction(score) / Fraction(max_score)


def fraction(score: Decimal, max_score: Decimal) -> Decimal:
    """score ÷ max_score as a decimal fraction (1 = 100%); a maximum of 0 gives 0."""
    if max_score == ZERO:
        return ZERO
    return _EXACT.divide(score, max_score)


def percent(score: Decimal, max_score: Decimal) -> Decimal:
    """The percent a teacher reads (85.5 for 85.5%), rounded half-up to hundredths."""
    return _to_cents(_ratio(score, max_score) * 100)


def canvas_score(grade_fraction: Decimal, canvas_points: Decimal) -> Decimal:
    """The grade Canvas will show: fraction × points, to the cent."""
    return _to_cents(Fraction(grade_fraction) * Fraction(canvas_points))


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


def _exact_grade_fraction(spec: GradeSpec) -> Fraction:
    if spec.override_percent is not None:
        return Fraction(spec.override_percent) / 100
    if spec.mode is GradeMode.complete_incomplete:
        return Fraction(1) if spec.complete else Fraction(0)
    if spec.score is None or spec.max_score is None:
        return Fraction(0)
    return _ratio(spec.score, spec.max_score)


def grade_fraction(spec: GradeSpec) -> Decimal:
    """The fraction of the Canvas points the student earns (1 = 100%)."""
    exact = _exact_grade_fraction(spec)
    return _EXACT.divide(Decimal(exact.numerator), Decimal(exact.denominator))


def score_to_send(spec: GradeSpec, canvas_points: Decimal) -> ScoreToSend:
    """The AGS scoreGiven/scoreMaximum for the line item's current points.

    With 0 points Canvas accepts scoreMaximum 0 only when the line item's maximum is 0 too,
    and then does not scale: sending 0/0 makes the grade 0, whatever was asked (a points
    override too). Above 0 points a points override may exceed them (extra credit).
    """
    incomplete = spec.mode is GradeMode.complete_incomplete and not spec.complete
    progress = "Submitted" if incomplete and spec.override_percent is None else "Completed"
    if canvas_points == ZERO:
        # Any percentage of zero is zero, a points override included (SPEC §2.3).
        return ScoreToSend(ZERO, ZERO, progress)
    if spec.override_points is not None:
        return ScoreToSend(spec.override_points, canvas_points, progress)
    given = _to_cents(_exact_grade_fraction(spec) * Fraction(canvas_points))
    return ScoreToSend(given, canvas_points, progress)


def canvas_grade_of_result(
    result_score: Decimal, result_maximum: Decimal | None, canvas_points: Decimal
) -> Decimal:
    """The grade Canvas shows for a result read back through the Results service, in the
    assignment's current points: resultScore × points ÷ resultMaximum, to the cent (Canvas
    gives a teacher's regrade rescaled to resultMaximum); without a maximum, resultScore."""
    if result_maximum is None or result_maximum == ZERO:
        return _to_cents(Fraction(result_score))
    return _to_cents(Fraction(result_score) * Fraction(canvas_points) / Fraction(result_maximum))
