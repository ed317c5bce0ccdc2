"""Fixtures for the reliability tests: a throw-away PostgreSQL database per test, a service
context on it beside the test module's `canvas` sandbox, and the figures the tests measure
(see figures.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.context import AppContext
from app.store.migrate import upgrade_to_head_async
from tests.conftest import make_settings
from tests.lti.world import build_context
from tests.reliability.database import new_postgres_database
from tests.reliability.figures import figures, print_figures  # noqa: F401  (fixture)
from tests.support import databases
from tests.support.sandbox import RunningSandbox


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    print_figures(terminalreporter, config)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """An empty PostgreSQL database (the service migrates it when it starts); dropped after."""
    url = await new_postgres_database()
    try:
        yield url
    finally:
        await databases.drop_postgres_database(url)


@pytest.fixture
async def soak_context(
    postgres_url: str, canvas: RunningSandbox, tmp_path: Path, tool_keys_dir: Path
) -> AsyncIterator[AppContext]:
    """The service's context on `postgres_url`, migrated, its clock the module's `canvas`
    sandbox's; outbound reads time out after 0.5 s."""
    await upgrade_to_head_async(postgres_url)
    settings = make_settings(postgres_url, tmp_path, tool_keys_dir, http_read_timeout=0.5)
    context = build_context(settings, canvas.clock)
    await context.load_tool_keys()
    try:
        yield context
    finally:
        await context.close()
