"""Two replicas, one PostgreSQL: they sign with the same tool key and publish the same JWKS, so
Canvas may fetch the JWKS from either and accept assertions from both; `passback keys rotate`
reaches both without a restart (SPEC §5)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.auth import teacher_headers
from tests.support.classroom import Classroom, make_classroom
from tests.support.processes import PASSBACK, ServiceProcess, service_env, start_service
from tests.support.sandbox import run_sandbox

REFRESH_SECONDS = 0.3


def tokens_granted(metrics_text: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "passback_token_requests_total" and sample.labels == {"result": "ok"}:
                return sample.value
    return 0.0


async def start_replica(
    name: str, postgres_url: str, tmp_path: Path, keys_dir: Path
) -> ServiceProcess:
    """`passback serve` in its own working directory and var dir, without workers."""
    home = tmp_path / name
    home.mkdir()
    env = service_env(
        postgres_url,
        var_dir=home / "var",
        keys_dir=keys_dir,
        tool_key_refresh_seconds=REFRESH_SECONDS,
    )
    return await start_service(
        env, log_path=tmp_path / f"{name}.log", cwd=home, extra_args=("--no-workers",)
    )


async def canvas_points_previewed(api: httpx.AsyncClient, classroom: Classroom) -> Any:
    """The teacher's preview reads the line item from Canvas: it needs an access token."""
    response = await api.get(
        f"/v1/formatives/{classroom.formative_id}/passback/preview",
        params={"mode": "grades"},
        headers=teacher_headers("t-1"),
    )
    assert response.status_code == 200, response.text
    (group,) = response.json()["classes"]
    (row,) = group["rows"]
    return row["canvas_points"]


async def test_two_replicas_publish_the_same_jwks_and_canvas_grants_tokens_to_both(
    postgres_url: str, tmp_path: Path, tool_keys_dir: Path
) -> None:
    # The first replica has no key files; the second has the session's: whichever writes the
    # database's first key, both must end up signing with that one.
    empty_keys = tmp_path / "no-keys"
    first, second = await asyncio.gather(
        start_replica("first", postgres_url, tmp_path, empty_keys),
        start_replica("second", postgres_url, tmp_path, tool_keys_dir),
    )
    try:
        async with (
            run_sandbox() as sandbox,
            httpx.AsyncClient(base_url=first.base_url, timeout=30) as api_first,
            httpx.AsyncClient(base_url=second.base_url, timeout=30) as api_second,
        ):
            jwks_first = (await api_first.get("/.well-known/jwks.json")).json()
            jwks_second = (await api_second.get("/.well-known/jwks.json")).json()
            assert jwks_first == jwks_second
            assert len(jwks_first["keys"]) == 1

            # Canvas knows only the first replica's JWKS URL; assertions come from both.
            classroom = await make_classroom(
                api_first,
                sandbox,
                None,
                tool_jwks_url=f"{first.base_url}/.well-known/jwks.json",
                student_names=("Ada",),
                teacher_ids=("t-1",),
            )
            await classroom.launch("s-1")
            await classroom.work("s-1", "7")
            for api in (api_first, api_second):
                assert str(await canvas_points_previewed(api, classroom)) in ("10", "10.0")
                assert tokens_granted((await api.get("/metrics")).text) == 1

            original = jwks_first["keys"][0]["kid"]
            rotated = subprocess.run(
                [str(PASSBACK), "keys", "rotate"],
                env=first.env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            new_kid = rotated.stdout.split("current key: ")[1].split()[0]
            assert f"still published: {original}" in rotated.stdout
            for api in (api_first, api_second):
                for _ in range(100):
                    published = (await api.get("/.well-known/jwks.json")).json()["keys"]
                    if published[0]["kid"] == new_kid:
                        break
                    await asyncio.sleep(0.1)
                assert [key["kid"] for key in published] == [new_kid, original]
    finally:
        await first.terminate()
        await second.terminate()
