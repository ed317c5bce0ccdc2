"""What the image does, without Docker: build the wheel from what the Dockerfile copies,
install it into a fresh venv (dependencies from requirements.lock through pip's configured
index, then the wheel with --no-deps), and run `passback migrate` and `passback serve` from an
unrelated directory on PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from app.store.db import create_engine, schema_revision
from app.store.migrate import head_revision
from tests.support.processes import service_env, start_service

ROOT = Path(__file__).resolve().parents[2]
PIP_SECONDS = 600


def run(command: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    finished = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=PIP_SECONDS,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    return finished.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from what the Dockerfile's build stage copies: pyproject.toml and app/."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"  # the Dockerfile's build stage copies pyproject.toml and app/ only
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copytree(ROOT / "app", source / "app", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "wheel", "--no-deps", "--wheel-dir", work / "dist", source], cwd=work)
    (built,) = (work / "dist").glob("passback-*.whl")
    return built


def test_the_wheel_holds_every_file_of_the_package_that_is_not_python(wheel: Path) -> None:
    """Migrations' configuration, templates, static assets: what a non-editable install needs."""
    data = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "app").rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    }
    assert data, "expected alembic.ini at least"
    with zipfile.ZipFile(wheel) as archive:
        assert data <= set(archive.namelist())


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the locked dependencies and the built wheel; returns its bin/."""
    work = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", work / "venv"], cwd=work)
    venv_pip = [work / "venv" / "bin" / "python", "-m", "pip", "--disable-pip-version-check"]
    lock = ROOT / "requirements.lock"
    run([*venv_pip, "install", "-q", "--require-hashes", "--no-deps", "-r", lock], cwd=work)
    run([*venv_pip, "install", "-q", "--no-deps", wheel], cwd=work)
    return work / "venv" / "bin"


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_the_built_wheel_migrates_and_serves_from_an_unrelated_directory(
    installed: Path, postgres_url: str, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = service_env(postgres_url, var_dir=tmp_path / "var", keys_dir=tmp_path / "keys")
    env["PATH"] = f"{installed}{os.pathsep}{env.get('PATH', '')}"
    where = run([installed / "python", "-c", "import app; print(app.__file__)"], cwd=elsewhere)
    assert Path(where.strip()).is_relative_to(installed.parent)  # not the repo's app/

    assert "database schema is at head" in run(
        [installed / "passback", "migrate"], cwd=elsewhere, env=env
    )
    engine = create_engine(postgres_url, pool_size=1)
    try:
        assert await schema_revision(engine) == head_revision()
    finally:
        await engine.dispose()

    service = await start_service(
        env, log_path=tmp_path / "service.log", cwd=elsewhere, passback=installed / "passback"
    )
    try:
        async with httpx.AsyncClient(base_url=service.base_url) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            keys = (await client.get("/.well-known/jwks.json")).json()["keys"]
            assert len(keys) == 1 and keys[0]["alg"] == "RS256"
    finally:
        await service.terminate()
    assert sorted(path.name for path in elsewhere.iterdir()) == []  # wrote nothing where it ran
