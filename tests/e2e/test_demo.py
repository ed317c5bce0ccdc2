"""`passback demo` against `passback serve --sandbox` as a newcomer runs them (real processes,
development mode: no API keys configured): repeatable across restarts, and what it prints
leads somewhere real."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.support.processes import ServiceProcess, free_port, service_env, start_service
from tests.test_cli import assert_one_line_error, run_cli

EXPECTED_SCORES = ("Canvas score 7", "Canvas score 9", "Canvas score 6.25")


def _development_env(tmp_path: Path, keys_dir: Path) -> dict[str, str]:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'var' / 'passback.db'}"
    env = service_env(
        database_url,
        var_dir=tmp_path / "var",
        keys_dir=keys_dir,
        api_keys=[],
        dev_mode="true",  # as scripts/start: with no API keys, a development key is made
        log_json="false",
    )
    del env["PASSBACK_TEACHER_TOKEN_SECRET"]  # as scripts/start: a development one is made
    return env


def _demo(env: dict[str, str], cwd: Path, api: str, sandbox: str, *extra: str) -> str:
    settings = {name.removeprefix("PASSBACK_").lower(): value for name, value in env.items()}
    settings = {name: value for name, value in settings.items() if name in {"var_dir"}}
    result = run_cli(
        "demo", "--api", api, "--sandbox-url", sandbox, *extra, cwd=cwd, timeout=120, **settings
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


async def _check_printed_links(output: str, api: str) -> None:
    gradebook = re.search(r"sandbox gradebook of the demo course: (\S+)", output)
    teacher_page = re.search(r"teacher page of its formative: (\S+)", output)
    assert gradebook and teacher_page, output
    async with httpx.AsyncClient(timeout=10) as client:
        page = await client.get(gradebook.group(1))
        assert page.status_code == 200
        for name in ("Ada Lovelace", "Grace Hopper", "Alan Turing"):
            assert name in page.text
        assert ">7<" in page.text and ">6.25<" in page.text
        url = teacher_page.group(1)
        assert url.startswith(f"{api}/teach/formatives/")
        assert (await client.get(url.split("#")[0])).status_code == 200
        formative_id = url.split("/teach/formatives/")[1].split("/passback")[0]
        token = url.split("#token=")[1]
        preview = await client.get(
            f"{api}/v1/formatives/{formative_id}/passback/preview",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert preview.status_code == 200, preview.text
        rows = [row for group in preview.json()["classes"] for row in group["rows"]]
        assert len(rows) == 3


async def _start_up_lines(service: ServiceProcess) -> str:
    return await service.log_holding("teacher page of a sandbox formative")


async def _check_start_up_teacher_page(welcome: str, api: str) -> None:
    """The start-up lines' teacher page works before any demo: its teacher may preview."""
    found = re.findall(
        r"teacher page of a sandbox formative \(nobody launched yet\): (\S+)", welcome
    )
    assert found, welcome
    url = found[-1]
    formative_id = url.split("/teach/formatives/")[1].split("/passback")[0]
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(url.split("#")[0])).status_code == 200
        preview = await client.get(
            f"{api}/v1/formatives/{formative_id}/passback/preview",
            headers={"Authorization": f"Bearer {url.split('#token=')[1]}"},
        )
    assert preview.status_code == 200, preview.text
    rows = [row for group in preview.json()["classes"] for row in group["rows"]]
    assert len(rows) == 3


async def test_demo_runs_again_after_the_service_and_its_sandbox_restart(
    tmp_path: Path, tool_keys_dir: Path
) -> None:
    env = _development_env(tmp_path, tool_keys_dir)
    port = free_port()
    service = await start_service(
        env, log_path=tmp_path / "service.log", port=port, extra_args=("--sandbox",)
    )
    api, sandbox = service.base_url, f"http://127.0.0.1:{port + 1}"
    try:
        await _check_start_up_teacher_page(await _start_up_lines(service), api)
        first = _demo(env, tmp_path, api, sandbox)
        assert all(score in first for score in EXPECTED_SCORES), first
        await _check_printed_links(first, api)
        await service.terminate()
        service = await service.restarted()  # the sandbox forgets; var/passback.db does not
        await _check_start_up_teacher_page(await _start_up_lines(service), api)
        second = _demo(env, tmp_path, api, sandbox)
        assert all(score in second for score in EXPECTED_SCORES), second
        await _check_printed_links(second, api)
        welcome = service.log_text()
        assert "passback demo" in welcome
        assert "/sandbox/gradebook/courses/" not in welcome, "no link to an empty course"
    finally:
        await service.terminate()


async def test_demo_with_a_wrong_api_key_is_one_line(tmp_path: Path, tool_keys_dir: Path) -> None:
    env = _development_env(tmp_path, tool_keys_dir)
    port = free_port()
    service = await start_service(
        env, log_path=tmp_path / "service.log", port=port, extra_args=("--sandbox",)
    )
    try:
        result = run_cli(
            "demo",
            "--api",
            service.base_url,
            "--sandbox-url",
            f"http://127.0.0.1:{port + 1}",
            "--api-key",
            "not-the-key",
            cwd=tmp_path,
        )
        assert_one_line_error(result, "401", "--api-key")
    finally:
        await service.terminate()
