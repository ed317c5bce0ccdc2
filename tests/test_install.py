"""How long an invite lasts: what `passback platforms invite --ttl` accepts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.install import parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90", timedelta(seconds=90)),
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        (" 24H ", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
    ],
)
def test_invite_lifetimes_are_read_in_seconds_minutes_hours_or_days(
    text: str, expected: timedelta
) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "1.5h", "-1h", "2w", "ten"])
def test_an_invite_lifetime_that_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
