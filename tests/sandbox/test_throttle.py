"""Canvas's leaky-bucket throttle (canvas-ags.md §7, §6 row 1)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.sandbox import Scenario, ThrottleSettings
from app.sandbox.config import DEFAULT_CLUSTER
from app.sandbox.throttle import Throttle, ags_bucket_key
from tests.sandbox.canvas import bearer, line_item_url, media_type
from tests.support.sandbox import RunningSandbox, ToolKey, token_form

THROTTLED = b"403 Forbidden (Rate Limit Exceeded)\n"


def assert_throttled(response: httpx.Response) -> None:
    assert response.status_code == 403
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.content == THROTTLED
    assert response.headers["x-rate-limit-remaining"] == "0.0"
    assert "x-request-cost" not in response.headers


def bucket(world: Scenario) -> str:
    return ags_bucket_key(world.client_id, DEFAULT_CLUSTER)


async def test_answers_carry_request_cost_and_remaining_capacity(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.clock.freeze()

    response = await http.get(line_item_url(sandbox, world), headers=bearer(token))

    assert response.status_code == 200
    assert response.headers["x-request-cost"] == "0.1"
    assert response.headers["x-rate-limit-remaining"] == "599.9"


async def test_full_bucket_is_refused_with_canvas_plain_text_403(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.clock.freeze()
    await sandbox.admin.fill_bucket(bucket(world), 600)

    response = await http.get(line_item_url(sandbox, world), headers=bearer(token))

    assert_throttled(response)
    (logged,) = await sandbox.admin.requests(path_contains="/line_items/")
    assert (logged["status"], logged["throttled"]) == (403, True)


async def test_bucket_leaks_ten_units_a_second(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.clock.freeze()
    await sandbox.admin.fill_bucket(bucket(world), 605)
    assert_throttled(await http.get(line_item_url(sandbox, world), headers=bearer(token)))

    sandbox.clock.advance(1)
    response = await http.get(line_item_url(sandbox, world), headers=bearer(token))

    assert response.status_code == 200
    assert response.headers["x-rate-limit-remaining"] == "4.9"


async def test_each_developer_key_has_its_own_bucket(
    sandbox: RunningSandbox,
    world: Scenario,
    token: str,
    tool_key: ToolKey,
    http: httpx.AsyncClient,
) -> None:
    other = sandbox.state.create_developer_key(public_jwk=tool_key.public_jwk())
    sandbox.state.install_tool(world.course_id, other.client_id)
    other_token = await sandbox.access_token(tool_key, other.client_id)
    sandbox.clock.freeze()
    await sandbox.admin.fill_bucket(bucket(world), 700)

    throttled = await http.get(line_item_url(sandbox, world), headers=bearer(token))
    other_items = sandbox.url(f"/api/lti/courses/{world.course_id}/line_items")
    unaffected = await http.get(other_items, headers=bearer(other_token))

    assert_throttled(throttled)
    assert unaffected.status_code == 200


async def test_each_token_grant_costs_200_so_a_burst_of_tokens_is_throttled(
    sandbox: RunningSandbox, world: Scenario, tool_key: ToolKey, http: httpx.AsyncClient
) -> None:
    sandbox.clock.freeze()

    statuses = []
    for _ in range(4):
        assertion = tool_key.client_assertion(
            client_id=world.client_id, audience=sandbox.token_url, now=sandbox.clock.timestamp()
        )
        response = await http.post(sandbox.token_url, data=token_form(assertion))
        statuses.append(response.status_code)

    assert statuses == [200, 200, 200, 403]
    assert_throttled(response)
    assert sandbox.state.token_grants(world.client_id) == 3


async def test_requests_in_flight_reserve_capacity_until_they_answer(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.clock.freeze()
    await sandbox.admin.fill_bucket(bucket(world), 560)
    slow = asyncio.create_task(
        http.get(
            line_item_url(sandbox, world),
            headers={**bearer(token), "X-Sandbox-Fault": "latency; delay_ms=400"},
        )
    )
    while sandbox.state.throttle.levels().get(bucket(world), 0) < 600:
        await asyncio.sleep(0.01)

    refused = await http.get(line_item_url(sandbox, world), headers=bearer(token))
    answered = await slow

    assert_throttled(refused)
    assert answered.status_code == 200
    assert sandbox.state.throttle.levels()[bucket(world)] == 560.1


async def test_disabled_throttle_never_refuses(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.clock.freeze()
    await sandbox.admin.set_throttle(enabled=False)
    await sandbox.admin.fill_bucket(bucket(world), 800)

    response = await http.get(line_item_url(sandbox, world), headers=bearer(token))

    assert response.status_code == 200
    assert media_type(response) == "application/vnd.ims.lis.v2.lineitem+json"


async def test_throttle_numbers_are_adjustable(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    sandbox.clock.freeze()
    await sandbox.admin.set_throttle(request_cost=2.5, high_water=100)

    response = await http.get(line_item_url(sandbox, world), headers=bearer(token))

    assert response.headers["x-request-cost"] == "2.5"
    assert response.headers["x-rate-limit-remaining"] == "97.5"


def test_bucket_charges_the_cost_after_refunding_the_up_front_reservation() -> None:
    now = [1000.0]
    throttle = Throttle(ThrottleSettings(), lambda: now[0])

    first = throttle.admit("k")
    second = throttle.admit("k")
    assert first is not None and second is not None
    assert throttle.levels() == {"k": 100.0}
    assert throttle.complete(first, 1.0) == 549.0
    now[0] += 2  # 51 leaks to 31; refunding 50 and charging 1 floors the bucket at 0
    assert throttle.complete(second, 1.0) == 600.0
    assert throttle.admit("k") is not None


async def test_hosts_on_one_cluster_share_a_bucket_and_other_clusters_have_their_own(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    first, same_cluster, other_cluster = sandbox.hosts[0], sandbox.hosts[1], sandbox.hosts[2]
    assert first.cluster == same_cluster.cluster != other_cluster.cluster
    sandbox.clock.freeze()
    await sandbox.admin.fill_bucket(sandbox.bucket_key(world.client_id, first), 700)
    url = line_item_url(sandbox, world)

    assert_throttled(await http.get(first.url_of(url), headers=bearer(token)))
    assert_throttled(await http.get(same_cluster.url_of(url), headers=bearer(token)))
    unaffected = await http.get(other_cluster.url_of(url), headers=bearer(token))

    assert unaffected.status_code == 200
    assert unaffected.headers["x-rate-limit-remaining"] == "599.9"
    assert sandbox.state.throttle.levels()[
        ags_bucket_key(world.client_id, other_cluster.cluster)
    ] == pytest.approx(0.1)


async def test_a_token_from_the_one_token_endpoint_is_good_on_every_host(
    sandbox: RunningSandbox, world: Scenario, token: str, http: httpx.AsyncClient
) -> None:
    url = line_item_url(sandbox, world)

    statuses = [
        (await http.get(host.url_of(url), headers=bearer(token))).status_code
        for host in sandbox.hosts
    ]

    assert statuses == [200] * len(sandbox.hosts)
    assert sandbox.state.token_grants(world.client_id) == 1
