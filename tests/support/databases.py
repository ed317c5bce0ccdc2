"""Test databases: a migrated SQLite file and, where reachable, a throw-away PostgreSQL database.

`PASSBACK_TEST_POSTGRES_URL` names the server (default: the local trust-auth server);
`PASSBACK_REQUIRE_POSTGRES=1` turns "PostgreSQL unreachable" from a skip into a failure.
"""

from __future__ import annotations

import os
import uuid

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.models import Base

POSTGRES_SERVER_URL = os.environ.get(
    "PASSBACK_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def postgres_required() -> bool:
    return os.environ.get("PASSBACK_REQUIRE_POSTGRES") == "1"


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def postgres_reachable() -> bool:
    try:
        connection = await asyncpg.connect(_asyncpg_dsn(POSTGRES_SERVER_URL), timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


async def create_postgres_database() -> str:
    """A new empty database on the test server; returns its SQLAlchemy URL."""
    name = f"passback_test_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(_asyncpg_dsn(POSTGRES_SERVER_URL), timeout=5)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return make_url(POSTGRES_SERVER_URL).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    connection = await asyncpg.connect(_asyncpg_dsn(POSTGRES_SERVER_URL), timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def empty_all_tables(engine: AsyncEngine) -> None:
    """Delete every row (children first); the schema stays.

    DELETE, not TRUNCATE: a test leaves a few rows, and PostgreSQL's TRUNCATE of every table
    makes new files for each (0.1-0.2 s a test here, DELETE about 10 ms).
    """
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    async with engine.begin() as connection:
        for table in tables:
            await connection.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - our own table names
