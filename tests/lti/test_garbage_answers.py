"""Whatever a platform answers, a call ends with a classified outcome, never an exception
of another kind: absurd numbers, wrong types, deep or huge bodies, HTML, truncation."""

from __future__ import annotations

import gzip
import resource
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from app.context import AppContext
from app.lti.ags import AgsError
from app.lti.ags_documents import Score
from app.lti.http import AnswerTooLarge, CappedTransport, json_document
from app.lti.jwks import JwksUnavailableError
from app.manual.preview import canvas_line_item_reader
from app.store.models import Platform
from tests.support.garbage_platform import (
    LINE_ITEM_KINDS,
    STREAM_KINDS,
    TOKEN_KINDS,
    GarbagePlatform,
    expected_codes,
)

A_SCORE = Score("u-1", Decimal(7), Decimal(10), "Completed", datetime(2026, 1, 1, tzinfo=UTC))


@dataclass(frozen=True)
class Registration:
    id: str
    client_id: str
    token_url: str
    audience: str
    allowed_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1"])


@pytest.fixture
async def garbage(request: pytest.FixtureRequest) -> AsyncIterator[tuple[GarbagePlatform, str]]:
    platform = GarbagePlatform(request.param)
    async with platform.running() as base_url:
        yield platform, base_url


def registration(base_url: str, kind: str) -> Registration:
    return Registration(f"garbage-{kind}", "client", f"{base_url}/token", f"{base_url}/token")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("garbage", [*TOKEN_KINDS, *LINE_ITEM_KINDS, *STREAM_KINDS], indirect=True)
async def test_a_garbage_answer_is_an_outcome_not_a_crash(
    lti_context: AppContext, garbage: tuple[GarbagePlatform, str]
) -> None:
    platform, base_url = garbage
    peak_before = peak_rss_mb()
    with pytest.raises(AgsError) as raised:
        await lti_context.ags.read_line_item(
            registration(base_url, platform.kind), f"{base_url}/lineitems/1"
        )
    assert raised.value.code == expected_codes()[platform.kind]
    assert raised.value.outcome.message
    assert peak_rss_mb() - peak_before < 100  # a 300 MB (or 16 MB unzipped) body never read


@pytest.mark.parametrize("garbage", ["score_error_deep"], indirect=True)
async def test_a_deep_error_answer_to_a_score_is_a_retry_with_the_body_as_message(
    lti_context: AppContext, garbage: tuple[GarbagePlatform, str]
) -> None:
    platform, base_url = garbage
    exchanges = await lti_context.ags.post_score(
        registration(base_url, platform.kind), f"{base_url}/lineitems/1", A_SCORE
    )
    [exchange] = exchanges
    assert (exchange.outcome.code, exchange.outcome.http_status) == ("platform_error", 500)
    assert exchange.outcome.message is not None and exchange.outcome.message.startswith("[[[")


@pytest.mark.parametrize("garbage", ["line_item_deep"], indirect=True)
async def test_a_deep_answer_to_a_score_post_is_taken_as_accepted(
    lti_context: AppContext, garbage: tuple[GarbagePlatform, str]
) -> None:
    platform, base_url = garbage
    [exchange] = await lti_context.ags.post_score(
        registration(base_url, platform.kind), f"{base_url}/lineitems/1", A_SCORE
    )
    assert exchange.outcome.code == "delivered"


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8/lineitems/1\t", "http://127.0.0.1:99999/lineitems/1", "http://[::1/x"],
)
async def test_a_stored_line_item_url_httpx_refuses_fails_the_call_with_a_code(
    lti_context: AppContext, url: str
) -> None:
    base_url = "http://127.0.0.1:8"
    for call in (
        lti_context.ags.read_line_item(registration(base_url, "url"), url),
        lti_context.ags.read_result(registration(base_url, "url"), url, "u-1"),
        lti_context.ags.post_score(registration(base_url, "url"), url, A_SCORE),
    ):
        with pytest.raises(AgsError) as raised:
            await call
        assert raised.value.code == "url_not_allowed"


async def test_answers_past_the_cap_are_aborted_whatever_their_encoding() -> None:
    body = b"x" * 5000

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/gzip":
            return httpx.Response(
                200, content=gzip.compress(body), headers={"content-encoding": "gzip"}
            )
        return httpx.Response(200, content=body[: int(request.url.params["size"])])

    transport = CappedTransport(httpx.MockTransport(answer), max_bytes=4096)
    async with httpx.AsyncClient(transport=transport) as client:
        assert len((await client.get("http://p.example/?size=4096")).content) == 4096
        for url in ("http://p.example/?size=4097", "http://p.example/gzip"):
            with pytest.raises(AnswerTooLarge):
                await client.get(url)


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, "NaN", '{"a": Infinity}', "1" * 5000, "<html>", '{"a": 1', "", "\x00"],
)
def test_json_that_cannot_be_used_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        json_document(text)


@pytest.mark.parametrize("garbage", ["points_1e400", "line_item_huge"], indirect=True)
async def test_the_teacher_preview_reads_a_garbage_line_item_as_unreadable(
    lti_context: AppContext, garbage: tuple[GarbagePlatform, str]
) -> None:
    _, base_url = garbage
    reader = canvas_line_item_reader(lti_context)
    registered = Platform(
        id="garbage",
        client_id="client",
        token_url=f"{base_url}/token",
        allowed_hosts=["127.0.0.1"],
    )
    read = await reader(registered, f"{base_url}/lineitems/1")
    assert (read.points, read.problem) == (None, "invalid_answer")


@pytest.mark.parametrize("garbage", ["line_item_huge", "line_item_deep"], indirect=True)
async def test_a_garbage_jwks_answer_is_unavailable_not_a_crash(
    lti_context: AppContext, garbage: tuple[GarbagePlatform, str]
) -> None:
    _, base_url = garbage
    with pytest.raises(JwksUnavailableError):
        await lti_context.jwks.key_set(f"{base_url}/jwks")
