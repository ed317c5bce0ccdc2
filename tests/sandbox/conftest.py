"""Fixtures of the sandbox's own tests: the loopback sandbox, a tool key, a seeded world."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.sandbox import Scenario, seed_scenario
from tests.support.sandbox import (  # noqa: F401  (fixtures)
    LoopbackServer,
    RunningSandbox,
    ToolKey,
    sandbox_fixture,
    sandbox_server_fixture,
    tool_key_fixture,
)


class JwksHost:
    """A tool's key server on loopback: serves `documents[path]` as JSON (404 otherwise)."""

    def __init__(self) -> None:
        self.documents: dict[str, object] = {}
        self.server = LoopbackServer()
        self.fetches = 0

        async def serve(request: Request) -> Response:
            self.fetches += 1
            document = self.documents.get(request.url.path)
            if document is None:
                return Response(status_code=404)
            if isinstance(document, str):
                return Response(document, media_type="application/json")
            return JSONResponse(document)

        self.app = Starlette(routes=[Route("/{path:path}", serve)])

    def url(self, path: str) -> str:
        return f"{self.server.base_url}{path}"


@pytest.fixture(scope="session")
async def jwks_host() -> AsyncIterator[JwksHost]:
    host = JwksHost()
    await asyncio.to_thread(host.server.start, host.app)
    try:
        yield host
    finally:
        await asyncio.to_thread(host.server.stop)


@pytest.fixture
def world(sandbox: RunningSandbox, tool_key: ToolKey) -> Scenario:
    """A key trusting `tool_key` inline, a course with the tool, a 10-point assignment, and
    three active students."""
    return seed_scenario(sandbox.state, tool_jwk=tool_key.public_jwk(), points=10, students=3)


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
async def token(sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey) -> str:
    """An access token with every AGS scope for the world's developer key."""
    return await sandbox.access_token(tool_key, world.client_id)
