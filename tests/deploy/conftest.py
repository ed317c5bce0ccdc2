"""Fixtures for the deployment tests: an empty PostgreSQL database per test (`postgres_url`,
the reliability tests' fixture)."""

from tests.reliability.conftest import postgres_url  # noqa: F401  (fixture)
