"""Percent and Canvas-score arithmetic (SPEC §2.3), exact decimals."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from app.grading.score import (
    GradeMode,
    GradeSpec,
    canvas_grade_of_result,
    canvas_score,
    fraction,
    percent,
    score_to_send,
)

HALF_CENT = Fraction(1, 200)


def cents(places: int, max_value: int) -> st.SearchStrategy[Decimal]:
    return st.decimals(
        min_value=0, max_value=max_value, places=places, allow_nan=False, allow_infinity=False
    )


scores = cents(3, 10_000)
maxima = cents(3, 10_000).filter(lambda value: value > 0)
points = cents(2, 100_000)


def round_half_up_to_cent(value: Fraction) -> Fraction:
    return Fraction(math.floor(value * 100 + Fraction(1, 2)), 100)


@given(st.data())
def test_fraction_and_percent_stay_between_nothing_and_everything(data: st.DataObject) -> None:
    maximum = data.draw(maxima)
    score = data.draw(cents(3, 10_000).filter(lambda value: value <= maximum))
    assert Decimal(0) <= fraction(score, maximum) <= Decimal(1)
    assert Decimal(0) <= percent(score, maximum) <= Decimal(100)


@given(scores, maxima, points)
def test_canvas_score_is_never_off_by_more_than_half_a_cent(
    score: Decimal, maximum: Decimal, canvas_points: Decimal
) -> None:
    sent = score_to_send(GradeSpec(score=score, max_score=maximum), canvas_points)
    exact = Fraction(score) / Fraction(maximum) * Fraction(canvas_points)
    if canvas_points == 0:
        assert (sent.score_given, sent.score_maximum) == (0, 0)
        return
    assert abs(Fraction(sent.score_given) - exact) <= HALF_CENT
    assert Fraction(sent.score_given) == round_half_up_to_cent(exact)
    assert sent.score_maximum == canvas_points
    assert sent.score_given == sent.score_given.quantize(Decimal("0.01"))


@given(scores, maxima)
def test_percent_is_the_exact_ratio_rounded_half_up_to_hundredths(
    score: Decimal, maximum: Decimal
) -> None:
    exact = Fraction(score) / Fraction(maximum) * 100
    assert Fraction(percent(score, maximum)) == round_half_up_to_cent(exact)


def test_a_product_exactly_on_a_half_cent_rounds_up() -> None:
    # 1/3 of 0.015 points is exactly 0.005: a rounded-off third would land below the half.
    spec = GradeSpec(score=Decimal(1), max_score=Decimal(3))
    assert score_to_send(spec, Decimal("0.015")).score_given == Decimal("0.01")
    assert percent(Decimal(1), Decimal(8)) == Decimal("12.50")
    assert percent(Decimal(1), Decimal(3)) == Decimal("33.33")
    assert percent(Decimal(2), Decimal(3)) == Decimal("66.67")


def test_seven_of_ten_on_a_twenty_point_assignment_is_fourteen() -> None:
    sent = score_to_send(GradeSpec(score=Decimal(7), max_score=Decimal(10)), Decimal(20))
    assert (sent.score_given, sent.score_maximum) == (Decimal("14.00"), Decimal(20))
    assert sent.activity_progress == "Completed"


@given(scores, points)
def test_a_zero_maximum_gives_zero_percent_and_zero_points(
    score: Decimal, canvas_points: Decimal
) -> None:
    assert fraction(score, Decimal(0)) == 0
    assert percent(score, Decimal(0)) == 0
    sent = score_to_send(GradeSpec(score=score, max_score=Decimal(0)), canvas_points)
    assert sent.score_given == 0


@given(scores, maxima)
def test_zero_canvas_points_send_a_zero_grade(score: Decimal, maximum: Decimal) -> None:
    sent = score_to_send(GradeSpec(score=score, max_score=maximum), Decimal(0))
    assert (sent.score_given, sent.score_maximum) == (Decimal(0), Decimal(0))


@given(cents(2, 500), points.filter(lambda value: value > 0))
def test_a_percent_override_may_exceed_one_hundred(
    override: Decimal, canvas_points: Decimal
) -> None:
    spec = GradeSpec(score=Decimal(1), max_score=Decimal(10), override_percent=override)
    sent = score_to_send(spec, canvas_points)
    exact = Fraction(override) / 100 * Fraction(canvas_points)
    assert Fraction(sent.score_given) == round_half_up_to_cent(exact)
    if override > 100:
        assert sent.score_given >= canvas_points


def test_extra_credit_lands_above_the_points() -> None:
    spec = GradeSpec(score=Decimal(5), max_score=Decimal(10), override_percent=Decimal(110))
    assert score_to_send(spec, Decimal(20)).score_given == Decimal("22.00")


def test_a_points_override_is_sent_as_typed() -> None:
    spec = GradeSpec(score=Decimal(5), max_score=Decimal(10), override_points=Decimal("17.5"))
    sent = score_to_send(spec, Decimal(20))
    assert (sent.score_given, sent.score_maximum) == (Decimal("17.5"), Decimal(20))


def test_a_points_override_on_a_zero_point_assignment_is_zero() -> None:
    spec = GradeSpec(score=Decimal(5), max_score=Decimal(10), override_points=Decimal(15))
    sent = score_to_send(spec, Decimal(0))
    assert (sent.score_given, sent.score_maximum) == (Decimal(0), Decimal(0))


def test_a_grade_read_back_is_in_the_assignments_current_points() -> None:
    assert canvas_grade_of_result(Decimal("19"), Decimal("20"), Decimal("20")) == Decimal("19")
    assert canvas_grade_of_result(Decimal("47.5"), Decimal("50"), Decimal("20")) == Decimal("19")
    assert canvas_grade_of_result(Decimal(1), Decimal(3), Decimal(1)) == Decimal("0.33")
    assert canvas_grade_of_result(Decimal("7"), None, Decimal("20")) == Decimal("7.00")
    assert canvas_grade_of_result(Decimal("7"), Decimal(0), Decimal(0)) == Decimal("7.00")


def test_complete_is_everything_and_incomplete_is_nothing_but_submitted() -> None:
    complete = GradeSpec(mode=GradeMode.complete_incomplete, complete=True)
    incomplete = GradeSpec(mode=GradeMode.complete_incomplete, complete=False)
    assert score_to_send(complete, Decimal(15)).score_given == Decimal("15.00")
    assert score_to_send(complete, Decimal(15)).activity_progress == "Completed"
    assert score_to_send(incomplete, Decimal(15)).score_given == Decimal("0.00")
    assert score_to_send(incomplete, Decimal(15)).activity_progress == "Submitted"


def test_canvas_score_of_a_decimal_fraction_rounds_half_up() -> None:
    assert canvas_score(Decimal("0.125"), Decimal("0.1")) == Decimal("0.01")
    assert canvas_score(Decimal("0.5"), Decimal("0.01")) == Decimal("0.01")
    assert canvas_score(Decimal("0.7"), Decimal(10)) == Decimal("7.00")
