"""The AGS client against the sandbox Canvas over loopback: reads, score posts, paging, guard."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.lti.ags import AgsError
from app.lti.ags_documents import (
    CANVAS_SUBMISSION_EXTENSION,
    MEDIA_SCORE,
    Score,
    iso_millis,
    parse_link_header,
    results_url,
    score_payload,
)
from tests.lti.world import World
from tests.support.sandbox import LoopbackServer

SUBMITTED = datetime(2026, 11, 20, 14, 3, 10, 900_000, tzinfo=UTC)


def a_score(student: str, given: str = "8.3", **fields: object) -> Score:
    values: dict[str, object] = {
        "user_id": student,
        "score_given": Decimal(given),
        "score_maximum": Decimal(10),
        "activity_progress": "Completed",
        "timestamp": datetime(2026, 11, 20, 14, 3, 11, 250_123, tzinfo=UTC),
        "submitted_at": SUBMITTED,
        "response_url": "https://formative.example/r/abc",
        "new_submission": True,
    }
    values.update(fields)
    return Score(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Registration:
    """A registration that is not in the database (the client needs only these fields)."""

    id: str
    client_id: str
    token_url: str
    audience: str
    allowed_hosts: Sequence[str] = field(default_factory=list)


def registration_of(world: World, **changes: object) -> Registration:
    platform = world.platform
    values: dict[str, object] = {
        "id": platform.id,
        "client_id": platform.client_id,
        "token_url": platform.token_url,
        "audience": platform.audience,
        "allowed_hosts": list(platform.allowed_hosts),
    }
    values.update(changes)
    return Registration(**values)  # type: ignore[arg-type]


async def test_reading_a_line_item_gives_the_canvas_points_and_label(world: World) -> None:
    item = await world.context.ags.read_line_item(world.platform, world.line_item_url)
    assert item.points == Decimal(10)
    assert item.label == "Fractions quiz"
    assert item.url == world.line_item_url


async def test_points_with_cents_are_read_exactly(world: World) -> None:
    await world.sandbox.admin.set_assignment_points(world.assignment_id, "12.35")
    item = await world.context.ags.read_line_item(world.platform, world.line_item_url)
    assert item.points == Decimal("12.35")


async def test_a_deleted_assignment_reads_as_not_linked(world: World) -> None:
    await world.sandbox.admin.delete_assignment(world.assignment_id)
    with pytest.raises(AgsError) as raised:
        await world.context.ags.read_line_item(world.platform, world.line_item_url)
    assert raised.value.code == "assignment_not_linked"
    assert raised.value.outcome.http_status == 404


async def test_a_score_post_is_exactly_what_the_spec_says(world: World) -> None:
    student = world.students[0]
    exchanges = await world.context.ags.post_score(
        world.platform, world.line_item_url, a_score(student)
    )
    assert [exchange.outcome.code for exchange in exchanges] == ["delivered"]
    [post] = await world.score_posts()
    assert post["path"].endswith("/scores")
    assert post["request_headers"]["content-type"] == MEDIA_SCORE
    body = json.loads(post["request_body"])
    assert body == {
        "userId": student,
        "scoreGiven": 8.3,
        "scoreMaximum": 10,
        "activityProgress": "Completed",
        "gradingProgress": "FullyGraded",
        "timestamp": "2026-11-20T14:03:11.250+00:00",
        "submission": {"submittedAt": "2026-11-20T14:03:10.900+00:00"},
        CANVAS_SUBMISSION_EXTENSION: {
            "new_submission": True,
            "submission_type": "basic_lti_launch",
            "submission_data": "https://formative.example/r/abc",
            "submitted_at": "2026-11-20T14:03:10.900+00:00",
        },
    }
    cell = await world.cell(student)
    assert cell["score"] == "8.3"
    assert cell["attempt"] == 1
    assert cell["submission_type"] == "basic_lti_launch"
    assert cell["url"] == "https://formative.example/r/abc"
    assert cell["comments"] == []


async def test_a_comment_goes_only_when_a_teacher_wrote_one(world: World) -> None:
    student = world.students[0]
    await world.context.ags.post_score(
        world.platform, world.line_item_url, a_score(student, comment="Well done")
    )
    [post] = await world.score_posts()
    assert json.loads(post["request_body"])["comment"] == "Well done"
    cell = await world.cell(student)
    assert [comment["comment"] for comment in cell["comments"]] == ["Well done"]


async def test_scores_go_before_the_line_item_query_string(world: World) -> None:
    url = world.line_item_url + "?type_id=5"
    exchanges = await world.context.ags.post_score(world.platform, url, a_score(world.students[0]))
    assert exchanges[-1].outcome.code == "delivered"
    [post] = await world.score_posts()
    assert post["path"].endswith("/scores")
    assert post["query"] == "type_id=5"


async def test_a_students_result_is_read_with_what_canvas_stored_of_the_post(
    world: World,
) -> None:
    student, other = world.students[0], world.students[1]
    await world.context.ags.post_score(world.platform, world.line_item_url, a_score(student))

    read = await world.context.ags.read_result(world.platform, world.line_item_url, student)

    assert read.result is not None
    assert (read.result.user_id, read.result.score, read.result.maximum) == (
        student,
        Decimal("8.3"),
        Decimal(10),
    )
    # Canvas echoes the submission extension: it names the submission the post opened.
    assert read.result.submission["submitted_at"] == "2026-11-20T14:03:10.900+00:00"
    assert read.result.submission["submission_data"] == "https://formative.example/r/abc"
    assert [exchange.outcome.code for exchange in read.exchanges] == ["delivered"]
    [get] = await world.sandbox.admin.requests(path_contains="/results", method="GET")
    assert get["path"].endswith("/results")
    assert get["query"] == f"user_id={student}"
    missing = await world.context.ags.read_result(world.platform, world.line_item_url, other)
    assert missing.result is None


async def test_every_students_result_is_read_following_the_pages(world: World) -> None:
    ags = world.context.ags
    for index, student in enumerate(world.students[:3]):
        await ags.post_score(
            world.platform, world.line_item_url, a_score(student, score_given=Decimal(index))
        )

    results = await ags.read_results(world.platform, f"{world.line_item_url}?limit=2")

    assert [(result.user_id, result.score) for result in results] == [
        (student, Decimal(index)) for index, student in enumerate(world.students[:3])
    ]
    pages = await world.sandbox.admin.requests(path_contains="/results", method="GET")
    assert len(pages) == 2, "one paged read: two pages of two"


async def test_one_token_serves_line_items_results_and_scores(world: World) -> None:
    ags, student = world.context.ags, world.students[0]
    await ags.read_line_item(world.platform, world.line_item_url)
    await ags.read_result(world.platform, world.line_item_url, student)
    await ags.post_score(world.platform, world.line_item_url, a_score(student))
    assert await world.sandbox.admin.token_grants(world.client_id) == 1


async def test_a_key_without_result_readonly_still_delivers(world: World) -> None:
    admin, ags, student = world.sandbox.admin, world.context.ags, world.students[0]
    key = await admin.call("GET", f"/developer-keys/{world.client_id}")
    without = [scope for scope in key["scopes"] if not scope.endswith("/result.readonly")]
    await admin.update_developer_key(world.client_id, scopes=without)

    item = await ags.read_line_item(world.platform, world.line_item_url)
    exchanges = await ags.post_score(world.platform, world.line_item_url, a_score(student))

    assert item.points == Decimal(10)
    assert exchanges[-1].outcome.code == "delivered"
    with pytest.raises(AgsError) as raised:
        await ags.read_result(world.platform, world.line_item_url, student)
    assert raised.value.code == "scope_not_granted"
    assert "result.readonly" in (raised.value.outcome.message or "")
    # Refused once with the scope, granted without it; then that token serves every call.
    assert await admin.token_grants(world.client_id) == 1
    assert await admin.requests(path_contains="/results") == []


def test_results_go_before_the_line_item_query_string() -> None:
    url = "https://canvas.example/api/lti/courses/1/line_items/2?type_id=5"
    assert results_url(url, "a b&c") == (
        "https://canvas.example/api/lti/courses/1/line_items/2/results?type_id=5&user_id=a+b%26c"
    )


def test_timestamps_are_iso_8601_with_milliseconds_in_utc() -> None:
    moment = datetime(2026, 11, 20, 14, 3, 11, 999_999, tzinfo=UTC)
    assert iso_millis(moment) == "2026-11-20T14:03:11.999+00:00"
    body = score_payload(a_score("u", submitted_at=None, response_url=None, new_submission=False))
    assert "submission" not in body
    assert body[CANVAS_SUBMISSION_EXTENSION] == {"new_submission": False}
    assert "comment" not in body


async def test_line_items_are_followed_across_pages(world: World) -> None:
    for number in range(4):
        await world.sandbox.admin.create_assignment(
            world.course_id, name=f"Quiz {number}", points="5", client_id=world.client_id
        )
    container = f"{world.sandbox.base_url}/api/lti/courses/{world.course_id}/line_items?limit=2"
    items = await world.context.ags.line_items(world.platform, container)
    assert sorted(item.label or "" for item in items) == [
        "Fractions quiz",
        "Quiz 0",
        "Quiz 1",
        "Quiz 2",
        "Quiz 3",
    ]
    pages = await world.sandbox.admin.requests(path_contains="/line_items", method="GET")
    assert len(pages) == 3


@pytest.fixture
async def odd_platform() -> AsyncIterator[LoopbackServer]:
    """A platform that pages with an unquoted rel and upper-case letters in its URLs."""
    server = LoopbackServer()

    async def page(request: Request) -> JSONResponse:
        number = int(request.query_params.get("Page", "1"))
        headers = {}
        if number < 3:
            headers["link"] = f"<{server.base_url}/LineItems?Page={number + 1}>; rel=next"
        items = [{"id": f"{server.base_url}/LineItems/{number}", "label": f"L{number}"}]
        return JSONResponse(items, headers=headers)

    await asyncio.to_thread(server.start, Starlette(routes=[Route("/LineItems", page)]))
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def test_unquoted_rel_is_followed_and_url_case_kept(
    world: World, odd_platform: LoopbackServer
) -> None:
    registration = registration_of(world, allowed_hosts=["127.0.0.1"])
    items = await world.context.ags.line_items(registration, f"{odd_platform.base_url}/LineItems")
    assert [item.label for item in items] == ["L1", "L2", "L3"]
    assert items[2].url == f"{odd_platform.base_url}/LineItems/3"


def test_link_headers_are_read_quoted_or_not() -> None:
    header = (
        '<https://c.example/api/lti/courses/1/line_items?page=2&per_page=10>; rel="next",'
        "<https://C.example/Items?Page=1>; rel=first, "
        '<https://c.example/x?a=1,2>; rel="last prev"'
    )
    links = parse_link_header(header)
    assert links["next"] == "https://c.example/api/lti/courses/1/line_items?page=2&per_page=10"
    assert links["first"] == "https://C.example/Items?Page=1"
    assert links["last"] == links["prev"] == "https://c.example/x?a=1,2"
    assert parse_link_header(None) == {}
    assert parse_link_header("<https://c.example/a>; REL=Next") == {"next": "https://c.example/a"}


async def test_calls_to_hosts_the_registration_does_not_allow_are_refused(world: World) -> None:
    registration = registration_of(world, allowed_hosts=["canvas.example.edu"])
    with pytest.raises(AgsError) as raised:
        await world.context.ags.read_line_item(registration, world.line_item_url)
    assert raised.value.code == "url_not_allowed"
    assert await world.sandbox.admin.requests() == []
    assert world.context.tokens.requests_made == 0
