"""The Alembic migration and the SQLAlchemy models describe the same schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from app.context import AppContext
from app.store.db import schema_revision
from app.store.migrate import head_revision
from app.store.models import Base


def _differences(connection: Connection) -> list[object]:
    migration = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(migration, Base.metadata))


async def test_migrated_schema_matches_the_models(context: AppContext) -> None:
    async with context.engine.connect() as connection:
        differences = await connection.run_sync(_differences)
    assert differences == []


async def test_migrations_bring_the_database_to_head(context: AppContext) -> None:
    assert await schema_revision(context.engine) == head_revision()
