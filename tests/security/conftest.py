"""Fixtures for the security tests: a live service with a little real data in it, and the
figures the tests measure (see tests/reliability/figures.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.sandbox import SandboxConfig
from app.sandbox.config import ThrottleSettings
from tests.reliability.database import new_postgres_database
from tests.reliability.figures import figures, print_figures  # noqa: F401  (fixture)
from tests.reliability.remote import ADMIN, EVENTS, RemoteClass, launch_all, seed_class
from tests.support import databases
from tests.support.auth import API_KEYS, teacher_headers
from tests.support.processes import ServiceProcess, service_env, start_service
from tests.support.sandbox import (  # noqa: F401  (fixtures)
    RunningSandbox,
    run_sandbox,
    sandbox_fixture,
    sandbox_server_fixture,
)

FUZZ_KEY = "test-fuzz-key-every-scope-0123456789"
FUZZ_API_KEYS = [
    *API_KEYS,
    {"name": "fuzzer", "key": FUZZ_KEY, "scopes": ["events", "passback", "admin"]},
]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    print_figures(terminalreporter, config)


@dataclass
class LiveService:
    """A running instance on PostgreSQL with a Canvas class, launches, delivered automatic
    grades and one manual batch: ids that exist, for requests to reach past the 404s."""

    service: ServiceProcess
    sandbox: RunningSandbox
    room: RemoteClass
    batch_id: str
    job_id: int
    spare_platform_id: str
    """Another registration, for the runs that change or deactivate one."""

    @property
    def base_url(self) -> str:
        return self.service.base_url


@pytest.fixture(scope="module")
async def live_service(
    tmp_path_factory: pytest.TempPathFactory, tool_keys_dir: Path
) -> AsyncIterator[LiveService]:
    url = await new_postgres_database()
    var_dir = tmp_path_factory.mktemp("live")
    try:
        config = SandboxConfig(throttle=ThrottleSettings(enabled=False))
        async with run_sandbox(config) as sandbox:
            env = service_env(
                url,
                var_dir=var_dir,
                keys_dir=tool_keys_dir,
                api_keys=FUZZ_API_KEYS,
                public_base_url="https://passback.example",
                tool_launch_url="https://formative.example/lti/launch",
                tool_login_url="https://formative.example/lti/login",
            )
            service = await start_service(env, log_path=var_dir / "service.log")
            try:
                async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as api:
                    room = await seed_class(api, sandbox, tool_keys_dir, students=4)
                    await launch_all(api, room)
                    answers = []
                    for learner in room.learners[:2]:
                        response = await api.post(
                            "/v1/submission-events",
                            json=room.submitted_event(learner),
                            headers=EVENTS,
                        )
                        assert response.status_code == 202, response.text
                        answers.append(response.json())
                    sent = await api.post(
                        f"/v1/formatives/{room.formative_id}/passback",
                        json={"mode": "grades", "select": {"class_ids": [room.class_id]}},
                        headers=teacher_headers(room.teacher_ids[0]),
                    )
                    assert sent.status_code == 202, sent.text
                    spare = await api.post(
                        "/v1/platforms",
                        json={
                            "issuer": "https://spare.example.edu",
                            "client_id": "spare-1",
                            "deployment_ids": ["1"],
                            "token_url": "https://spare.example.edu/login/oauth2/token",
                            "jwks_url": "https://spare.example.edu/api/lti/security/jwks",
                        },
                        headers=ADMIN,
                    )
                    assert spare.status_code == 201, spare.text
                yield LiveService(
                    service,
                    sandbox,
                    room,
                    batch_id=str(sent.json()["batch_id"]),
                    job_id=int(answers[0]["job_id"]),
                    spare_platform_id=str(spare.json()["id"]),
                )
            finally:
                await service.terminate()
    finally:
        await databases.drop_postgres_database(url)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "known_bug(reason, backends=None): a bug found in another part, shown by this test; "
        "the test is expected to fail (strictly) until it is fixed, on the named database "
        "backends only when given.",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Turn `known_bug` into a strict xfail (a fix makes the test pass and the run fail,
    so the mark is removed with the fix)."""
    for item in items:
        marker = item.get_closest_marker("known_bug")
        if marker is None:
            continue
        backends = marker.kwargs.get("backends")
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("database_url") if callspec is not None else None
        if backends is None or backend in backends:
            reason = f"KNOWN BUG: {marker.args[0]}"
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
