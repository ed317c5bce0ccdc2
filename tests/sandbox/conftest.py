"""Fixtures of the sandbox's own tests: the loopback sandbox, a tool key, a seeded world."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.sandbox import Scenario, seed_scenario
from tests.support.sandbox import (  # noqa: F401  (fixtures)
    RunningSandbox,
    ToolKey,
    sandbox,
    sandbox_server,
    tool_key,
)


@pytest.fixture
def world(sandbox: RunningSandbox, tool_key: ToolKey) -> Scenario:
    """A key trusting `tool_key` inline, a course with the tool, a 10-point assignment, and
    three active students."""
    return seed_scenario(sandbox.state, tool_jwk=tool_key.public_jwk(), points=10, students=3)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client
