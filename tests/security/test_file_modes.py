"""Files on disk: the SQLite database (student names and scores) with its -wal and -shm files,
the development API key and the tool's private keys are the owner's alone (0600 files in
0700 directories) from the moment they exist, whatever the process umask allows."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from app.cli import DEV_KEY_FILE, development_api_key
from app.config import Settings
from app.lti.keys import write_new_key
from app.store.db import create_engine
from app.store.migrate import upgrade_to_head_async


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The usual umask (group and others may read what is created)."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_sqlite_database_and_its_wal_files_are_created_private(
    tmp_path: Path,
) -> None:
    var_dir = tmp_path / "var"
    database = var_dir / "passback.db"
    url = f"sqlite+aiosqlite:///{database}"
    await upgrade_to_head_async(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE scratch (x INTEGER)"))
            await connection.execute(text("INSERT INTO scratch VALUES (1)"))
        written = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
        assert all(path.exists() for path in written)
        assert {path.name: mode(path) for path in written} == {path.name: 0o600 for path in written}
        assert mode(var_dir) == 0o700
    finally:
        await engine.dispose()


def test_the_development_api_key_is_created_private(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var", api_keys=[])

    key = development_api_key(settings)

    path = tmp_path / "var" / DEV_KEY_FILE
    assert path.read_text().strip() == key
    assert (mode(path), mode(tmp_path / "var")) == (0o600, 0o700)
    assert development_api_key(settings) == key  # read back, not written again


def test_tool_keys_are_created_private_in_a_private_directory(tmp_path: Path) -> None:
    path = write_new_key(tmp_path / "var" / "keys")

    assert mode(path) == 0o600
    assert mode(tmp_path / "var" / "keys") == 0o700
    assert mode(tmp_path / "var") == 0o700
