"""INSERT … ON CONFLICT for whichever database the session is on (PostgreSQL or SQLite)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


def insert_for(
    executor: AsyncSession | AsyncConnection, entity: Any
) -> postgresql.Insert | sqlite.Insert:
    """An INSERT with `on_conflict_do_update`/`_do_nothing`, in the executor's dialect."""
    bind = executor.get_bind() if isinstance(executor, AsyncSession) else executor
    if bind.dialect.name == "postgresql":
        return postgresql.insert(entity)
    return sqlite.insert(entity)
