"""Run Alembic migrations from code (the start command, tests) and read the head revision.

On PostgreSQL the upgrade runs in one transaction holding an advisory lock, so replicas that
start together (each `passback serve` migrates first) or several `passback migrate` take turns:
the first brings the schema to head, the others then find it there and do nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from app.store.db import create_engine

# Alembic's configuration and scripts ship inside the package, so a wheel install migrates too.
MIGRATIONS_HOME = Path(__file__).resolve().parent
# pg_advisory_xact_lock key of "the schema is being migrated" (b"pbmigr" as an integer).
MIGRATION_LOCK = 0x7062_6D69_6772


def alembic_config(database_url: str) -> Config:
    config = Config(str(MIGRATIONS_HOME / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_HOME / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logging"] = False
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def upgrade_to_head(database_url: str) -> None:
    """Blocking (it runs its own event loop), so call it outside one."""
    asyncio.run(_upgrade(database_url))


async def _upgrade(database_url: str) -> None:
    # No statement timeout: a migration, or the wait for another one, may take minutes.
    engine = create_engine(database_url, pool_size=1, command_timeout=None)
    try:
        async with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # Held until the commit below; released by the server if this process dies.
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            await connection.run_sync(_upgrade_on, alembic_config(database_url))
            await connection.commit()
    finally:
        await engine.dispose()


def _upgrade_on(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection  # migrations/env.py runs on it
    command.upgrade(config, "head")


async def upgrade_to_head_async(database_url: str) -> None:
    await asyncio.to_thread(upgrade_to_head, database_url)
