"""Values the service cannot read back, written straight into the database (as a bug, an
old release or a hand-made fix could leave them), and the times that would store them."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import DateTime, String, Table, Text, bindparam, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.models import PassbackJob

POISON_TIMES = ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00")
"""Instants outside years 1–9999 once converted to UTC (valid ISO 8601 all the same)."""

_YEAR_10000 = {
    # PostgreSQL keeps year 10000, which asyncpg cannot turn into a datetime.
    "postgresql": "9999-12-31T23:59:59-14:00",
    # SQLite keeps text; Python cannot parse year 10000 back.
    "sqlite": "10000-01-01 13:59:59.000000",
}


async def write_unreadable_time(engine: AsyncEngine, job_id: int, column: str) -> None:
    """Put a year-10000 instant in `column` of one passback job, bypassing the service."""
    jobs = cast(Table, PassbackJob.__table__)
    dialect = engine.dialect.name
    value: Any = bindparam("value", _YEAR_10000[dialect], type_=String())
    if dialect == "postgresql":
        value = sql_cast(sql_cast(value, Text()), DateTime(timezone=True))
    async with engine.begin() as connection:
        await connection.execute(update(jobs).where(jobs.c.id == job_id).values({column: value}))
