"""What AGS documents hold: line items, results and scores.

Their values, what is read from a platform's answer (`line_item_of`, `line_items_of`,
`result_of`: each raises ValueError for an answer it cannot use, whatever it holds: not JSON,
nested too deeply, wrong types, numbers no assignment has), and the score body posted.
No I/O here: app.lti.ags makes the calls.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from app.lti.http import json_document
from app.lti.urls import service_url

MEDIA_SCORE = "application/vnd.ims.lis.v1.score+json"
MEDIA_LINEITEM = "application/vnd.ims.lis.v2.lineitem+json"
MEDIA_LINEITEM_CONTAINER = "application/vnd.ims.lis.v2.lineitemcontainer+json"
MEDIA_RESULT_CONTAINER = "application/vnd.ims.lis.v2.resultcontainer+json"
CANVAS_SUBMISSION_EXTENSION = "https://canvas.instructure.com/lti/submission"
SUBMISSION_TYPE_LTI_LAUNCH = "basic_lti_launch"
GRADING_FULLY_GRADED = "FullyGraded"
POINTS_MAX_PLACES = 12
POINTS_MAX_WHOLE_DIGITS = 18
"""Points and scores a platform may send: what the jobs' NUMERIC(30, 12) columns hold
(Canvas allows far less). A `scoreMaximum` of 1e400 or a 4,000-digit integer is refused."""


@dataclass(frozen=True)
class LineItem:
    """A line item as read: `points` is its scoreMaximum (the Canvas assignment's points)."""

    url: str
    points: Decimal | None
    label: str | None


@dataclass(frozen=True)
class Result:
    """A student's result on a line item, as the platform stores it.

    `score` and `maximum` are the scoreGiven and scoreMaximum last posted (unscaled; Canvas
    rescales `score` after a teacher's regrade); `submission` is Canvas's submission extension
    of the last accepted post, echoed back (empty elsewhere).
    """

    user_id: str
    score: Decimal | None
    maximum: Decimal | None
    submission: Mapping[str, Any]


@dataclass(frozen=True)
class Score:
    """One score to post (SPEC §2.4). `timestamp` must be the same on every resend."""

    user_id: str
    score_given: Decimal
    score_maximum: Decimal
    activity_progress: str
    timestamp: datetime
    submitted_at: datetime | None = None
    response_url: str | None = None
    new_submission: bool = True
    comment: str | None = None


def iso_millis(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds: ``2026-11-20T14:03:11.250+00:00``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def json_number(value: Decimal) -> int | float:
    """A decimal as a JSON number that reads back exactly (scores are cents, points whole)."""
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def score_payload(score: Score) -> dict[str, Any]:
    """The score+json body: FullyGraded with a scoreGiven always (never a grade-clearing post),
    the submission time, and Canvas's submission extension for SpeedGrader."""
    extension: dict[str, Any] = {"new_submission": score.new_submission}
    if score.response_url:
        extension["submission_type"] = SUBMISSION_TYPE_LTI_LAUNCH
        extension["submission_data"] = score.response_url
    body: dict[str, Any] = {
        "userId": score.user_id,
        "scoreGiven": json_number(score.score_given),
        "scoreMaximum": json_number(score.score_maximum),
        "activityProgress": score.activity_progress,
        "gradingProgress": GRADING_FULLY_GRADED,
        "timestamp": iso_millis(score.timestamp),
    }
    if score.submitted_at is not None:
        body["submission"] = {"submittedAt": iso_millis(score.submitted_at)}
        extension["submitted_at"] = iso_millis(score.submitted_at)
    body[CANVAS_SUBMISSION_EXTENSION] = extension
    if score.comment:
        body["comment"] = score.comment
    return body


# --- Link header ------------------------------------------------------------------------------

_LINK = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]+)*)")
_REL = re.compile(r"""\brel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))""", re.IGNORECASE)


def parse_link_header(value: str | None) -> dict[str, str]:
    """rel → URL from a `Link` header; quoted or bare rel, the URL exactly as given."""
    links: dict[str, str] = {}
    for match in _LINK.finditer(value or ""):
        rel = _REL.search(match.group(2) or "")
        if rel is None:
            continue
        for name in (rel.group(1) or rel.group(2) or "").split():
            links.setdefault(name.lower(), match.group(1).strip())
    return links


# --- Reading answers --------------------------------------------------------------------------


def _document(text: str) -> Any:
    # Decimals, not floats: points like 12.3 must stay exact.
    return json_document(text, exact=True)


def _number(value: Any, name: str) -> Decimal | None:
    """A JSON number within what the service stores (see POINTS_MAX_*), or None if absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError(f"{name} {str(value)[:40]!r} is not a number")
    number = Decimal(value)
    if not number.is_finite() or number < 0:
        raise ValueError(f"{name} {str(value)[:40]} is not a usable number of points")
    exponent = number.normalize().as_tuple().exponent  # trailing zeros are not places
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    if number.adjusted() >= POINTS_MAX_WHOLE_DIGITS or places > POINTS_MAX_PLACES:
        raise ValueError(f"{name} {str(value)[:40]} is not a usable number of points")
    return number


def _to_line_item(document: Any, fallback_url: str) -> LineItem:
    if not isinstance(document, dict):
        raise ValueError("a line item is a JSON object")
    label = document.get("label")
    url = document.get("id")
    return LineItem(
        url=url if isinstance(url, str) and url else fallback_url,
        points=_number(document.get("scoreMaximum"), "scoreMaximum"),
        label=label if isinstance(label, str) else None,
    )


def line_item_of(text: str, url: str) -> LineItem:
    """The line item an answer holds (`url`: where it was read, if it names no id)."""
    return _to_line_item(_document(text), url)


def line_items_of(text: str, url: str) -> list[LineItem]:
    """The line items of a container page."""
    document = _document(text)
    if not isinstance(document, list):
        raise ValueError("a line item container is a JSON array")
    return [_to_line_item(item, url) for item in document]


def results_url(lineitem_url: str, user_id: str) -> str:
    """`{lineitem}/results?user_id=…`, the line item's own query string kept."""
    parts = urlsplit(service_url(lineitem_url, "results"))
    query = "&".join(part for part in (parts.query, urlencode({"user_id": user_id})) if part)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def result_of(text: str, user_id: str) -> Result | None:
    """The student's result in a results container (at most one with the user_id filter)."""
    document = _document(text)
    if not isinstance(document, list):
        raise ValueError("a result container is a JSON array")
    for item in document:
        if not isinstance(item, dict):
            raise ValueError("a result is a JSON object")
        user = item.get("userId")
        if not isinstance(user, str | int) or isinstance(user, bool) or str(user) != user_id:
            continue
        extension = item.get(CANVAS_SUBMISSION_EXTENSION)
        return Result(
            user_id=user_id,
            score=_number(item.get("resultScore"), "resultScore"),
            maximum=_number(item.get("resultMaximum"), "resultMaximum"),
            submission=MappingProxyType(dict(extension) if isinstance(extension, dict) else {}),
        )
    return None


def results_of(text: str, _url: str = "") -> list[Result]:
    """Every result of a results container page."""
    document = _document(text)
    if not isinstance(document, list):
        raise ValueError("a result container is a JSON array")
    results = []
    for item in document:
        if not isinstance(item, dict):
            raise ValueError("a result is a JSON object")
        user_id = item.get("userId")
        if not isinstance(user_id, str | int) or isinstance(user_id, bool):
            raise ValueError("a result's userId is missing")
        extension = item.get(CANVAS_SUBMISSION_EXTENSION)
        results.append(
            Result(
                user_id=str(user_id),
                score=_number(item.get("resultScore"), "resultScore"),
                maximum=_number(item.get("resultMaximum"), "resultMaximum"),
                submission=MappingProxyType(dict(extension) if isinstance(extension, dict) else {}),
            )
        )
    return results
