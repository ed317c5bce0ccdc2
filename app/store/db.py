"""Engine and session factory, and the readiness probe of the schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.files import create_private_file

SQLITE_BUSY_TIMEOUT_MS = 30_000
# PostgreSQL unreachable must not mean a hung request: connecting, waiting for a pooled
# connection, and any one statement each give up after a few seconds (the API answers 503,
# workers try again). Our statements take milliseconds; one silent for 5 s is on a dead line.
PG_CONNECT_TIMEOUT_SECONDS = 5
PG_POOL_TIMEOUT_SECONDS = 5
PG_COMMAND_TIMEOUT_SECONDS = 5


def create_engine(
    database_url: str,
    *,
    pool_size: int = 10,
    command_timeout: float | None = PG_COMMAND_TIMEOUT_SECONDS,
) -> AsyncEngine:
    """An async engine tuned for the dialect: WAL and a busy timeout on SQLite; on PostgreSQL
    statements give up after `command_timeout` seconds (None: never, for migrations)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            # Student names and scores: the file is made 0600 before SQLite opens it, and
            # SQLite gives its -wal and -shm files the database file's mode.
            create_private_file(Path(url.database))
        engine = create_async_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, pool_pre_ping=False
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: with asyncpg it costs three round trips per checkout. A connection
        # that died with the server fails its one request (503, safe to resend) and
        # SQLAlchemy then invalidates the whole pool, so the next requests reconnect.
        pool_pre_ping=False,
        pool_timeout=PG_POOL_TIMEOUT_SECONDS,
        connect_args={
            "timeout": PG_CONNECT_TIMEOUT_SECONDS,
            "command_timeout": command_timeout,
        },
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session whose work is committed on success and rolled back on error."""
    async with sessions() as session, session.begin():
        yield session


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The Alembic revision the database is at (None when never migrated)."""
    async with engine.connect() as connection:
        has_table = await connection.run_sync(
            lambda sync: sync.dialect.has_table(sync, "alembic_version")
        )
        if not has_table:
            return None
        row = (await connection.execute(text("SELECT version_num FROM alembic_version"))).first()
        return None if row is None else str(row[0])
