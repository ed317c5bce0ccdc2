"""Shared fixtures: real databases (SQLite, and PostgreSQL where reachable), the app in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.context import AppContext
from app.lti.keys import ToolKey, generate_key, write_new_key
from app.main import create_app
from app.store.migrate import upgrade_to_head_async
from tests.support import databases
from tests.support.auth import API_KEYS, KEY_ENCRYPTION_KEY, TEACHER_TOKEN_SECRET

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def tool_keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tool key for the whole run (RSA generation is slow); rotation tests make their own."""
    keys_dir = tmp_path_factory.mktemp("keys")
    write_new_key(keys_dir)
    return keys_dir


@pytest.fixture(scope="session")
def spare_tool_keys() -> tuple[ToolKey, ...]:
    """Keys made once per run for rotations (`make_key=iter(spare_tool_keys).__next__`)."""
    return tuple(generate_key() for _ in range(3))


@pytest.fixture(scope="session", params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """A migrated database, once per backend per run."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'passback.db'}"
        await upgrade_to_head_async(url)
        yield url
        return
    if not await databases.postgres_reachable():
        if databases.postgres_required():
            pytest.fail("PostgreSQL is required (PASSBACK_REQUIRE_POSTGRES=1) but unreachable")
        pytest.skip("PostgreSQL is not reachable")
    url = await databases.create_postgres_database()
    try:
        await upgrade_to_head_async(url)
        yield url
    finally:
        await databases.drop_postgres_database(url)


def make_settings(database_url: str, var_dir: Path, keys_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "var_dir": var_dir,
        "tool_key_dir": keys_dir,
        "key_encryption_key": KEY_ENCRYPTION_KEY,
        "api_keys": API_KEYS,
        "teacher_token_secret": TEACHER_TOKEN_SECRET,
        "insecure_hosts": ["127.0.0.1", "localhost"],
        "run_workers": False,
        "database_pool_size": 5,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(database_url: str, tmp_path: Path, tool_keys_dir: Path) -> Settings:
    return make_settings(database_url, tmp_path, tool_keys_dir)


@pytest.fixture
async def context(settings: Settings) -> AsyncIterator[AppContext]:
    """An instance context on an emptied database."""
    context = AppContext.build(settings)
    await databases.empty_all_tables(context.engine)
    await context.load_tool_keys()  # the session key, imported from tool_keys_dir
    try:
        yield context
    finally:
        await context.close()


@pytest.fixture
def app(context: AppContext) -> FastAPI:
    return create_app(context=context)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://passback.test") as client:
        yield client
