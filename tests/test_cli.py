"""The command line: a mistake is one line naming it and a non-zero exit, never a traceback;
`--debug` shows the traceback; help is readable; development teacher tokens work."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from app.context import AppContext
from app.main import create_app
from tests.conftest import make_settings
from tests.support.auth import ADMIN_KEY, TEACHER_TOKEN_SECRET, bearer
from tests.support.processes import PASSBACK, free_port

UNREACHABLE_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:1/none"


def run_cli(
    *args: str, cwd: Path, timeout: float = 60, **settings: str
) -> subprocess.CompletedProcess[str]:
    """The installed `passback` in `cwd`, with only the given PASSBACK_* settings."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PASSBACK_")}
    env.update({f"PASSBACK_{name.upper()}": value for name, value in settings.items()})
    env["COLUMNS"] = "100"
    return subprocess.run(
        [str(PASSBACK), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("passback: "), line
    for word in words:
        assert word in line, line
    return line


def test_platforms_list_outside_the_repo_says_to_migrate_and_creates_nothing(
    tmp_path: Path,
) -> None:
    result = run_cli("platforms", "list", cwd=tmp_path)
    assert_one_line_error(result, "passback migrate", str(tmp_path / "var" / "passback.db"))
    assert list(tmp_path.iterdir()) == [], "no stray ./var"


def test_platforms_list_on_a_database_never_migrated_says_to_migrate(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    result = run_cli("platforms", "list", cwd=tmp_path, database_url=url)
    assert_one_line_error(result, "not migrated", "passback migrate")


def test_migrate_with_the_database_down_is_one_line_naming_it(tmp_path: Path) -> None:
    result = run_cli("migrate", cwd=tmp_path, database_url=UNREACHABLE_DATABASE)
    assert_one_line_error(result, "127.0.0.1:1/none")


def test_a_bad_api_keys_setting_is_one_line_naming_it(tmp_path: Path) -> None:
    result = run_cli("migrate", cwd=tmp_path, api_keys='[{"name": "x", "key": ')
    assert_one_line_error(result, "PASSBACK_API_KEYS")


def test_demo_against_a_port_where_nothing_listens_is_one_line(tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{free_port()}"
    result = run_cli("demo", "--api", api, "--api-key", "any", cwd=tmp_path)
    assert_one_line_error(result, "cannot reach", api)


def test_demo_without_an_api_key_says_where_one_comes_from(tmp_path: Path) -> None:
    result = run_cli("demo", cwd=tmp_path)
    assert_one_line_error(result, "--api-key", "scripts/start")
    assert not (tmp_path / "var").exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli("--debug", "migrate", cwd=tmp_path, database_url=UNREACHABLE_DATABASE)
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    by_level = run_cli(
        "migrate", cwd=tmp_path, database_url=UNREACHABLE_DATABASE, log_level="DEBUG"
    )
    assert "Traceback" in by_level.stderr


def test_teacher_token_without_a_secret_is_refused_in_one_line(tmp_path: Path) -> None:
    result = run_cli("teacher-token", "--teacher", "t-1", cwd=tmp_path)
    assert_one_line_error(result, "PASSBACK_TEACHER_TOKEN_SECRET")


async def test_a_teacher_token_from_the_command_line_is_accepted_by_the_service(
    tmp_path: Path, database_url: str, tool_keys_dir: Path
) -> None:
    result = run_cli(
        "teacher-token",
        "--teacher",
        "t-cli",
        "--formative",
        "fm cli/1",
        "--base-url",
        "http://passback.test",
        cwd=tmp_path,
        teacher_token_secret=TEACHER_TOKEN_SECRET,
    )
    assert result.returncode == 0, result.stderr
    token, page = result.stdout.split()
    assert page == f"http://passback.test/teach/formatives/fm%20cli%2F1/passback#token={token}"
    context = AppContext.build(make_settings(database_url, tmp_path, tool_keys_dir))
    transport = httpx.ASGITransport(app=create_app(context=context))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            # Authenticated as the teacher: an unknown formative is 403 (not 401).
            answer = await client.get(
                "/v1/formatives/fm-unknown/passback/preview", headers=bearer(token)
            )
            assert answer.status_code == 403, answer.text
            forged = await client.get(
                "/v1/formatives/fm-unknown/passback/preview", headers=bearer(token + "x")
            )
            assert forged.status_code == 401
    finally:
        await context.close()


@pytest.mark.parametrize("command", [("serve",), ("worker",), ("platforms", "add"), ("demo",)])
def test_help_shows_flags_as_flags_and_every_option_has_help(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    result = run_cli(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "<bool>" not in result.stdout
    options = [
        line.strip()
        for line in result.stdout.split("Options:")[1].splitlines()
        if line.strip().startswith("--")
    ]
    assert options
    for option in options:
        name, _, help_text = option.partition("  ")
        assert help_text.strip() or option.endswith("]"), f"no help text for {name}"


def test_unauthorized_admin_key_name_is_not_printed(tmp_path: Path) -> None:
    """The one-line answers never echo a configured secret."""
    result = run_cli("migrate", cwd=tmp_path, api_keys=f'[{{"name": "a", "key": "{ADMIN_KEY}"')
    line = assert_one_line_error(result, "PASSBACK_API_KEYS")
    assert ADMIN_KEY not in line


@pytest.mark.parametrize("command", [("keys", "show"), ("keys", "rotate"), ("prune",)])
def test_database_commands_outside_the_repo_say_to_migrate_and_create_nothing(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    kek = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # 32 bytes, base64
    result = run_cli(*command, cwd=tmp_path, key_encryption_key=kek)
    assert_one_line_error(result, "passback migrate")
    assert list(tmp_path.iterdir()) == [], "no stray ./var"
