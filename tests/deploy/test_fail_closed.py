"""Fail closed (SPEC §5): settings that cannot work stop `passback serve` with one line naming
them and a non-zero exit, before it migrates or listens; only development mode makes a key."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from app.tool_keys import DEVELOPMENT_KEK_FILE
from tests.support.processes import PASSBACK, free_port, service_env, start_service

NOT_HEX = "z" * 64


def refused_start(
    tmp_path: Path, *, command: str = "serve", **settings: str
) -> tuple[int, str, Path]:
    """Run `passback serve` (or `command`) with the test settings changed by `settings`
    (environment values); it must end by itself. Returns the exit code, stderr, and where its
    database would be."""
    database = tmp_path / "var" / "passback.db"
    env = service_env(
        f"sqlite+aiosqlite:///{database}", var_dir=tmp_path / "var", keys_dir=tmp_path / "keys"
    )
    env.update({f"PASSBACK_{name.upper()}": value for name, value in settings.items()})
    finished = subprocess.run(
        [str(PASSBACK), command, *(["--port", str(free_port())] if command == "serve" else [])],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.stdout == ""
    return finished.returncode, finished.stderr, database


def assert_one_line_naming(stderr: str, setting: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert setting in lines[0]
    assert "Traceback" not in stderr


def test_serve_without_api_keys_outside_development_refuses_in_one_line(tmp_path: Path) -> None:
    code, stderr, database = refused_start(tmp_path, api_keys="[]")
    assert code != 0
    assert_one_line_naming(stderr, "PASSBACK_API_KEYS")
    assert "PASSBACK_DEV_MODE" in stderr
    assert not database.exists()  # refused before migrating anything
    assert not (tmp_path / "var" / "dev-api-key").exists()


def test_serve_without_a_key_encryption_key_outside_development_refuses_in_one_line(
    tmp_path: Path,
) -> None:
    code, stderr, _ = refused_start(tmp_path, key_encryption_key="")
    assert code != 0
    assert_one_line_naming(stderr, "PASSBACK_KEY_ENCRYPTION_KEY")
    assert not (tmp_path / "var" / DEVELOPMENT_KEK_FILE).exists()


def test_a_worker_without_a_key_encryption_key_outside_development_refuses_in_one_line(
    tmp_path: Path,
) -> None:
    code, stderr, _ = refused_start(tmp_path, command="worker", key_encryption_key="")
    assert code != 0
    assert_one_line_naming(stderr, "PASSBACK_KEY_ENCRYPTION_KEY")


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        (
            "api_keys",
            json.dumps([{"name": "ci", "sha256": NOT_HEX, "scopes": ["admin"]}]),
        ),
        ("api_keys", "[{not json"),
        ("public_base_url", "passback.example.org"),
        ("teacher_token_jwks_url", "ftp://keys.example.org/jwks.json"),
        ("database_url", "postgres//db.example.org/passback"),
        ("key_encryption_key", "too-short"),
        ("http_read_timeout", "-1"),
        ("log_level", "LOUD"),
    ],
)
def test_a_setting_that_cannot_work_stops_the_start_with_one_line_naming_it(
    tmp_path: Path, setting: str, value: str
) -> None:
    code, stderr, database = refused_start(tmp_path, **{setting: value})
    assert code != 0
    assert_one_line_naming(stderr, f"PASSBACK_{setting.upper()}")
    assert not database.exists()


def test_a_bad_sha256_is_named_with_its_key(tmp_path: Path) -> None:
    keys = [{"name": "formative-ci", "sha256": NOT_HEX, "scopes": ["events"]}]
    _, stderr, _ = refused_start(tmp_path, api_keys=json.dumps(keys))
    assert "'formative-ci'" in stderr
    assert "sha256" in stderr


async def test_development_mode_without_api_keys_serves_with_a_printed_development_key(
    tmp_path: Path,
) -> None:
    var_dir = tmp_path / "var"
    env = service_env(
        f"sqlite+aiosqlite:///{var_dir / 'passback.db'}",
        var_dir=var_dir,
        keys_dir=tmp_path / "keys",
        api_keys=[],
        key_encryption_key="",
        dev_mode="true",
        log_json="false",
    )
    service = await start_service(env, log_path=tmp_path / "service.log", cwd=tmp_path)
    try:
        key = (var_dir / "dev-api-key").read_text().strip()
        line = f"development API key (every scope): {key}"
        assert line in await service.log_holding(line)
        async with httpx.AsyncClient(base_url=service.base_url) as client:
            response = await client.get("/v1/platforms", headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200
            assert (await client.get("/.well-known/jwks.json")).json()["keys"]
        assert (var_dir / DEVELOPMENT_KEK_FILE).stat().st_mode & 0o777 == 0o600
    finally:
        await service.terminate()
