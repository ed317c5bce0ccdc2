"""Fault injection: latency, 5xx, 429, dropped connections, timeouts, throttling storms."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import httpx
import pytest

from app.sandbox import Scenario
from tests.sandbox.canvas import bearer, line_item_url, media_type, post_score, score
from tests.support.sandbox import RunningSandbox

THROTTLED = b"403 Forbidden (Rate Limit Exceeded)\n"


def student(world: Scenario) -> str:
    return world.students[0].lti_id


async def test_error_fault_answers_5xx_with_a_canvas_body(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.add_fault("error", status=503, path="/scores$")

    response = await post_score(http, sandbox, world, token, score(student(world)))

    assert response.status_code == 503
    assert media_type(response) == "application/json"
    assert response.json() == {
        "errors": [{"message": "An error occurred.", "error_code": "service_unavailable"}]
    }
    assert sandbox.state.submission(world.assignment_id, student(world)) is None


async def test_too_many_requests_fault_carries_retry_after(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.add_fault("too_many_requests", retry_after=7)

    response = await post_score(http, sandbox, world, token, score(student(world)))

    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert media_type(response) == "application/json"


async def test_throttle_storm_answers_canvas_rate_limit(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.add_fault("throttle", remaining=2)

    storm = [await post_score(http, sandbox, world, token, score(student(world))) for _ in range(3)]

    assert [r.status_code for r in storm] == [403, 403, 200]
    assert storm[0].content == THROTTLED
    assert storm[0].headers["content-type"] == "text/plain; charset=utf-8"
    assert storm[0].headers["x-rate-limit-remaining"] == "0.0"
    assert "x-request-cost" not in storm[0].headers


async def test_dropped_connection_is_reset_without_an_answer(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.add_fault("drop", remaining=1)

    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await post_score(http, sandbox, world, token, score(student(world)))
    retried = await post_score(http, sandbox, world, token, score(student(world)))

    assert retried.status_code == 200
    dropped = (await sandbox.admin.requests(path_contains="/scores"))[0]
    assert (dropped["status"], dropped["fault"]) == (None, "drop:before")


async def test_drop_after_processing_lands_the_grade_but_loses_the_answer(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.add_fault("drop", phase="after", remaining=1)

    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await post_score(http, sandbox, world, token, score(student(world), 6))

    submission = sandbox.state.submission(world.assignment_id, student(world))
    assert submission is not None
    assert (submission.score, submission.attempt) == (Decimal(6), 1)


async def test_slow_answer_outlasts_the_clients_timeout(
    sandbox: RunningSandbox, world: Scenario, token: str
) -> None:
    await sandbox.admin.add_fault("latency", delay_ms=3000, remaining=1)

    async with httpx.AsyncClient(timeout=0.3) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await post_score(impatient, sandbox, world, token, score(student(world)))


async def test_base_latency_delays_every_platform_call(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.set_faults(latency_ms=150)

    started = time.perf_counter()
    response = await http.get(line_item_url(sandbox, world), headers=bearer(token))

    assert response.status_code == 200
    assert time.perf_counter() - started >= 0.15


async def test_fault_rule_only_hits_matching_paths_and_methods(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.add_fault("error", path="/scores$", method="POST")

    shown = await http.get(line_item_url(sandbox, world), headers=bearer(token))
    posted = await post_score(http, sandbox, world, token, score(student(world)))

    assert (shown.status_code, posted.status_code) == (200, 500)


async def test_next_n_rule_faults_exactly_that_many_requests(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.add_fault("error", status=502, remaining=2)

    statuses = [
        (await http.get(line_item_url(sandbox, world), headers=bearer(token))).status_code
        for _ in range(3)
    ]

    assert statuses == [502, 502, 200]
    assert (await sandbox.admin.set_faults())["rules"] == []


async def test_probabilistic_faults_repeat_with_the_same_seed(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    rules = [
        {"kind": "error", "probability": 0.1},
        {"kind": "too_many_requests", "probability": 0.1},
        {"kind": "throttle", "probability": 0.1},
    ]

    async def run() -> list[int]:
        await sandbox.admin.set_faults(rules=rules, seed=42)
        return [
            (await http.get(line_item_url(sandbox, world), headers=bearer(token))).status_code
            for _ in range(40)
        ]

    first, second = await run(), await run()

    assert first == second
    assert {500, 429, 403, 200} == set(first)


async def test_request_header_names_a_fault_for_that_request_only(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    faulted = await http.get(
        line_item_url(sandbox, world),
        headers={**bearer(token), "X-Sandbox-Fault": "error; status=504"},
    )
    normal = await http.get(line_item_url(sandbox, world), headers=bearer(token))

    assert (faulted.status_code, normal.status_code) == (504, 200)


async def test_token_endpoint_can_fail_too(
    sandbox: RunningSandbox, world: Scenario, http: httpx.AsyncClient
) -> None:
    await sandbox.admin.add_fault("error", path="/login/oauth2/token")

    response = await http.post(sandbox.token_url, data={"grant_type": "client_credentials"})

    assert response.status_code == 500


async def test_dropped_connection_is_a_tcp_reset(
    sandbox: RunningSandbox, world: Scenario, token: str
) -> None:
    await sandbox.admin.add_fault("drop", remaining=1)
    reader, writer = await asyncio.open_connection(sandbox.server.host, sandbox.server.port)
    path = f"/api/lti/courses/{world.course_id}/line_items/{world.line_item_id}"
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {sandbox.server.host}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    await writer.drain()

    with pytest.raises(ConnectionResetError):
        await reader.read()
    writer.close()


async def test_a_fault_naming_a_host_breaks_that_host_only(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    broken, healthy = sandbox.hosts[1], sandbox.hosts[2]
    await sandbox.admin.add_fault("error", status=500, host=broken.netloc)
    url = line_item_url(sandbox, world)

    failing = await http.get(broken.url_of(url), headers=bearer(token))
    working = await http.get(healthy.url_of(url), headers=bearer(token))

    assert failing.status_code == 500
    assert working.status_code == 200
