"""What /metrics exports besides the queue: the process and Python collectors, the build, and
HTTP requests by route template and status; no `_created` series."""

from __future__ import annotations

from importlib.metadata import version

import httpx

from app.api.openapi import SUBMISSION_EVENT_EXAMPLE
from app.config import Settings
from tests.support.auth import ADMIN_KEY, EVENTS_KEY, bearer


async def _metrics(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text


async def test_metrics_carry_process_python_and_build_info_without_created_series(
    client: httpx.AsyncClient,
) -> None:
    text = await _metrics(client)
    assert "process_resident_memory_bytes " in text
    assert "process_cpu_seconds_total " in text
    assert "python_info{" in text
    assert "python_gc_collections_total{" in text
    assert f'version="{version("passback")}"' in text.split("passback_build_info{")[1]
    assert "_created" not in text


async def test_http_requests_are_counted_by_route_template_and_status(
    client: httpx.AsyncClient,
) -> None:
    for platform_id in ("p-1", "p-2", "p-3"):
        answer = await client.get(f"/v1/platforms/{platform_id}", headers=bearer(ADMIN_KEY))
        assert answer.status_code == 404
    event = await client.post(
        "/v1/submission-events", json=SUBMISSION_EVENT_EXAMPLE, headers=bearer(EVENTS_KEY)
    )
    assert event.status_code in (200, 202)
    for path in ("/nothing/1", "/nothing/2"):
        assert (await client.get(path)).status_code == 404
    text = await _metrics(client)
    assert (
        'passback_http_requests_total{method="GET",route="/v1/platforms/{platform_id}",'
        'status="404"} 3.0'
    ) in text
    assert (
        'passback_http_requests_total{method="POST",route="/v1/submission-events",'
        f'status="{event.status_code}"}} 1.0'
    ) in text
    assert 'passback_http_requests_total{method="GET",route="unmatched",status="404"} 2.0' in text
    assert "p-1" not in text, "ids never become label values"
    assert (
        'passback_http_request_duration_seconds_count{method="POST",'
        'route="/v1/submission-events"} 1.0'
    ) in text


async def test_a_body_refused_before_the_app_is_counted_with_its_status(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    too_large = b"x" * (settings.max_body_bytes + 1)
    answer = await client.post(
        "/v1/submission-events", content=too_large, headers=bearer(EVENTS_KEY)
    )
    assert answer.status_code == 413
    assert answer.headers["x-request-id"]
    text = await _metrics(client)
    assert (
        'passback_http_requests_total{method="POST",route="/v1/submission-events",status="413"} 1.0'
    ) in text
