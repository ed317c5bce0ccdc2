"""A resent event is the same event when its values are the same, however its numbers are
spelled: a client that re-serialises `7` as `7.0` gets the 200 replay, not a 409. Events
stored by earlier releases (which kept the digest of the spelling) still replay."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from app.context import AppContext
from app.intake.event_in import (
    SubmissionEventIn,
    parse_json_exactly,
    request_digest,
    value_digest,
)
from app.store.models import SubmissionEvent
from tests.api.canvas_world import EVENTS, SUBMITTED_EVENT

PLAIN = json.dumps(SUBMITTED_EVENT)  # "score": 7, "max_score": 10, "points": 2


def spelled(score: str, max_score: str = "10", points: str = "2") -> str:
    return (
        PLAIN.replace('"score": 7', f'"score": {score}')
        .replace('"max_score": 10', f'"max_score": {max_score}')
        .replace('"points": 2', f'"points": {points}')
    )


async def post_raw(client: httpx.AsyncClient, raw: str) -> httpx.Response:
    headers = {**EVENTS, "content-type": "application/json"}
    return await client.post("/v1/submission-events", content=raw, headers=headers)


def parsed(raw: str) -> SubmissionEventIn:
    return SubmissionEventIn.model_validate(parse_json_exactly(raw.encode()))


@pytest.mark.parametrize(
    "resent",
    [
        spelled("7.0"),
        spelled("7e0"),
        spelled("70e-1"),
        spelled("7.000", max_score="1e1", points="2.0"),
        spelled("0.7E1", max_score="10.00", points="20e-1"),
    ],
)
async def test_a_resend_with_numbers_spelled_otherwise_is_the_replay(
    client: httpx.AsyncClient, resent: str
) -> None:
    first = await post_raw(client, PLAIN)
    again = await post_raw(client, resent)

    assert (first.status_code, again.status_code) == (202, 200), again.text
    assert again.content == first.content


async def test_a_resend_with_another_value_is_still_a_conflict(client: httpx.AsyncClient) -> None:
    first = await post_raw(client, spelled("7.50"))
    same = await post_raw(client, spelled("7.5"))
    other = await post_raw(client, spelled("7.05"))

    assert (first.status_code, same.status_code) == (202, 200)
    assert other.status_code == 409
    assert other.json()["code"] == "event_id_reused"


async def test_an_event_stored_by_an_earlier_release_still_replays(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    """Earlier releases stored the digest of the numbers as spelled (`request_digest`)."""
    sent = spelled("7.50", max_score="10.0")
    first = await post_raw(client, sent)
    assert first.status_code == 202, first.text
    earlier = request_digest(parsed(sent))
    assert earlier != value_digest(parsed(sent))
    async with context.sessions() as session, session.begin():
        await session.execute(update(SubmissionEvent).values(request_digest=earlier))

    again = await post_raw(client, sent)

    assert again.status_code == 200, again.text
    assert again.content == first.content


def test_plainly_written_numbers_have_the_digest_earlier_releases_stored() -> None:
    """So the common resend matches a row of an earlier release on the first comparison."""
    for raw in (PLAIN, spelled("7.25", max_score="12.5", points="0.125")):
        event = parsed(raw)
        assert value_digest(event) == request_digest(event)


def test_the_event_keeps_its_spelling_while_its_digest_is_by_value() -> None:
    written = parsed(spelled("7.0")).model_dump_json()

    assert '"score":"7.0"' in written
    assert value_digest(parsed(spelled("7.0"))) == value_digest(parsed(PLAIN))


scores = st.decimals(
    min_value=Decimal(0), max_value=Decimal("1e17"), places=6, allow_nan=False
).map(lambda number: number.normalize() if number else Decimal(0))


@settings(max_examples=200, deadline=None)
@given(scores, st.integers(min_value=0, max_value=4))
def test_every_spelling_of_a_score_has_the_digest_of_its_plain_spelling(
    score: Decimal, extra_zeros: int
) -> None:
    plain = format(score, "f")
    padded = plain + ("" if "." in plain else ".") + "0" * extra_zeros if extra_zeros else plain
    scientific = f"{score:E}"
    digests = {
        value_digest(parsed(spelled(text, max_score="1e17")))
        for text in (plain, padded, scientific)
    }
    assert len(digests) == 1, (plain, padded, scientific)
