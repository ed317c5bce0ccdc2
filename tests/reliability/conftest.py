"""Fixtures for the reliability tests: a throw-away PostgreSQL database per test, and the
figures the tests measure (see figures.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.reliability.database import new_postgres_database
from tests.reliability.figures import figures, print_figures  # noqa: F401  (fixture)
from tests.support import databases


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
