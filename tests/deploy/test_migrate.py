"""`passback migrate` from several replicas at once: an advisory lock makes them take turns."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from app.store.db import create_engine, schema_revision
from app.store.migrate import head_revision
from tests.support.processes import PASSBACK, service_env

REPLICAS = 4


async def test_concurrent_migrates_on_a_fresh_postgresql_database_all_succeed_and_leave_head(
    postgres_url: str, tmp_path: Path
) -> None:
    env = service_env(postgres_url, var_dir=tmp_path / "var", keys_dir=tmp_path / "keys")
    processes = [
        await asyncio.create_subprocess_exec(
            str(PASSBACK),
            "migrate",
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(REPLICAS)
    ]
    outputs = await asyncio.gather(*(process.communicate() for process in processes))
    for process, (output, _) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output.decode()
        assert b"database schema is at head" in output
    engine = create_engine(postgres_url, pool_size=1)
    try:
        assert await schema_revision(engine) == head_revision()
    finally:
        await engine.dispose()
