"""Teacher tokens verified against a JWKS URL (RS256): a slow, failing or hanging JWKS costs
its callers one fetch, not one each; they wait a bounded time; the answer shows an
unauthenticated caller nothing of the service's inside. And a teacher token that expired is
told apart from one that is not valid."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.types import Receive, Scope, Send

from app.context import AppContext
from app.lti.jwks import JwksCache
from app.main import create_app
from tests.conftest import make_settings
from tests.support import databases
from tests.support.auth import bearer, teacher_token
from tests.support.sandbox import LoopbackServer

FETCH_SECONDS = 2.0
CALLERS = 10


@dataclass
class SlowJwks:
    """A JWKS endpoint that answers `status` after `delay` seconds, counting its fetches."""

    delay: float
    status: int = 500
    fetches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        with self.lock:
            self.fetches += 1
        await asyncio.sleep(self.delay)
        body = b"upstream exploded: secret internal detail"
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": body})


async def serve(jwks: SlowJwks) -> LoopbackServer:
    server = LoopbackServer()
    jwks.url = f"{server.base_url}/internal/teacher-keys.json"
    await asyncio.to_thread(server.start, jwks)
    return server


@pytest.fixture
async def failing_jwks() -> AsyncIterator[SlowJwks]:
    jwks = SlowJwks(delay=FETCH_SECONDS)
    server = await serve(jwks)
    try:
        yield jwks
    finally:
        await asyncio.to_thread(server.stop)


@pytest.fixture
async def hanging_jwks() -> AsyncIterator[SlowJwks]:
    jwks = SlowJwks(delay=60)
    server = await serve(jwks)
    try:
        yield jwks
    finally:
        await asyncio.to_thread(server.stop)


async def service_for(
    database_url: str, tmp_path: Path, keys_dir: Path, jwks_url: str
) -> tuple[AppContext, FastAPI]:
    settings = make_settings(database_url, tmp_path, keys_dir, teacher_token_jwks_url=jwks_url)
    context = AppContext.build(settings)
    await databases.empty_all_tables(context.engine)
    return context, create_app(context=context)


def rs256_teacher_token() -> str:
    key = RSAKey.generate_key(2048)
    claims = {"sub": "t-1", "aud": "passback", "exp": int(time.time()) + 600}
    return jwt.encode({"alg": "RS256", "kid": "formative-1"}, claims, key)


async def ten_at_once(app: FastAPI, token: str) -> tuple[list[httpx.Response], float]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://passback.test") as api:
        started = time.monotonic()
        answers = await asyncio.gather(
            *(api.get("/v1/platforms", headers=bearer(token)) for _ in range(CALLERS))
        )
        return list(answers), time.monotonic() - started


async def test_a_failing_teacher_jwks_is_fetched_once_for_many_callers(
    database_url: str,
    tmp_path: Path,
    tool_keys_dir: Path,
    failing_jwks: SlowJwks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    context, app = await service_for(database_url, tmp_path, tool_keys_dir, failing_jwks.url)
    token = rs256_teacher_token()
    try:
        with caplog.at_level(logging.WARNING, logger="passback.jwks"):
            answers, took = await ten_at_once(app, token)
            assert failing_jwks.fetches == 1
            # Ten in a row behind one lock took 10 fetch times; together they take one.
            assert took < 3 * FETCH_SECONDS, took
            again, quick = await ten_at_once(app, token)  # the failure is remembered
        assert failing_jwks.fetches == 1
        assert quick < FETCH_SECONDS, quick
    finally:
        await context.close()

    for answer in [*answers, *again]:
        assert answer.status_code == 503, answer.text
        problem = answer.json()
        assert problem["code"] == "teacher_keys_unavailable"
        for inside in ("127.0.0.1", "internal", "teacher-keys", "500", "exploded", "secret"):
            assert inside not in answer.text, (inside, answer.text)
    logged = [record for record in caplog.records if record.name == "passback.jwks"]
    assert len(logged) == 1  # the operator learns where and why, once
    assert failing_jwks.url in str(logged[0].__dict__.get("url"))


async def test_callers_of_a_hanging_teacher_jwks_wait_a_bounded_time(
    database_url: str, tmp_path: Path, tool_keys_dir: Path, hanging_jwks: SlowJwks
) -> None:
    context, app = await service_for(database_url, tmp_path, tool_keys_dir, hanging_jwks.url)
    context.jwks = JwksCache(context.http, max_wait=0.5)
    try:
        answers, took = await ten_at_once(app, rs256_teacher_token())
    finally:
        await context.close()

    assert [answer.status_code for answer in answers] == [503] * CALLERS
    assert took < 5, took  # not the fetch's 60 s (nor its 15 s timeout)
    assert hanging_jwks.fetches == 1


async def test_an_expired_teacher_token_and_a_forged_one_get_different_codes(
    client: httpx.AsyncClient,
) -> None:
    expired = await client.get(
        "/v1/platforms", headers=bearer(teacher_token("t-1", expires_in=-120))
    )
    forged = await client.get(
        "/v1/platforms", headers=bearer(teacher_token("t-1", secret="another-secret-" * 3))
    )

    assert (expired.status_code, expired.json()["code"]) == (401, "token_expired")
    assert (forged.status_code, forged.json()["code"]) == (401, "token_invalid")
