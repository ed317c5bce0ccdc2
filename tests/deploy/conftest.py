"""Fixtures for the deployment tests: an empty PostgreSQL database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.reliability.database import new_postgres_database
from tests.support import databases


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """An empty PostgreSQL database (never migrated); dropped after the test."""
    url = await new_postgres_database()
    try:
        yield url
    finally:
        await databases.drop_postgres_database(url)
