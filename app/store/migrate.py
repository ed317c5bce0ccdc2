"""Run Alembic migrations from code (the start command, tests) and read the head revision."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

# Alembic's configuration and scripts ship inside the package, so a wheel install migrates too.
MIGRATIONS_HOME = Path(__file__).resolve().parent


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
    """Blocking; migrations/env.py runs its own event loop, so call it outside one."""
    command.upgrade(alembic_config(database_url), "head")


async def upgrade_to_head_async(database_url: str) -> None:
    await asyncio.to_thread(upgrade_to_head, database_url)
