"""Server-side request forgery: AGS URLs that point anywhere but the registered Canvas.

A launch carries the line item URL the service will later post grades (with a bearer token)
to. One whose URL names another host (or another port, a userinfo trick, a cloud metadata
address, another scheme) is refused at launch, and the named server never hears from the
service: not at launch, not when the student's work arrives, not when workers run. A URL that
was allowed at launch but is no longer allowed when delivering is not called either.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.context import AppContext
from app.delivery import DeliveryEngine
from app.lti.urls import host_of
from app.store.models import JobStatus, Launch, PassbackJob
from tests.reliability.remote import ADMIN, EVENTS, RemoteClass, seed_class
from tests.security.attacker import (
    RecordingServer,
    genuine_claims,
    platform_signed,
    recording_server,
)
from tests.support.sandbox import RunningSandbox

AGS = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"


@pytest.fixture
async def victim() -> AsyncIterator[RecordingServer]:
    """An internal server the attacker would like the service to call (with its token)."""
    async with recording_server({"scoreMaximum": 10, "id": "x"}) as server:
        yield server


@pytest.fixture
async def room(
    client: httpx.AsyncClient, sandbox: RunningSandbox, tool_keys_dir: Path
) -> RemoteClass:
    """Registered with the sandbox's exact host and port as the only allowed host."""
    await sandbox.admin.set_throttle(enabled=False)
    return await seed_class(
        client, sandbox, tool_keys_dir, students=2, allowed_hosts=(host_of(sandbox.base_url),)
    )


def hostile_urls(victim: RecordingServer, canvas: str) -> dict[str, str]:
    victim_authority = victim.base_url.removeprefix("http://")
    victim_port = victim_authority.rsplit(":", 1)[1]
    canvas_authority = canvas.removeprefix("http://")
    path = "/api/lti/courses/1/line_items/1"
    return {
        "another port on the same host": f"{victim.base_url}{path}",
        "localhost": f"http://localhost:{victim_port}{path}",
        "Canvas as userinfo before the real host": f"http://{canvas_authority}@{victim_authority}{path}",
        "backslash userinfo trick": f"http://{canvas_authority}\\@{victim_authority}{path}",
        "cloud metadata": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "a private address": "https://10.0.0.7/api/lti/courses/1/line_items/1",
        "another scheme": f"gopher://{victim_authority}/_POST",
        "a file": "file:///etc/passwd",
    }


async def count(context: AppContext, model: type[Launch] | type[PassbackJob]) -> int:
    async with context.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.parametrize("which", ["lineitem", "lineitems"])
@pytest.mark.parametrize(
    "hostile",
    [
        "another port on the same host",
        "localhost",
        "Canvas as userinfo before the real host",
        "backslash userinfo trick",
        "cloud metadata",
        "a private address",
        "another scheme",
        "a file",
    ],
)
async def test_a_launch_naming_another_host_is_refused_and_that_host_never_called(
    client: httpx.AsyncClient,
    context: AppContext,
    room: RemoteClass,
    victim: RecordingServer,
    hostile: str,
    which: str,
) -> None:
    learner = room.learners[0]
    claims = genuine_claims(room, learner)
    claims[AGS] = {**claims[AGS], which: hostile_urls(victim, room.sandbox.base_url)[hostile]}
    body = {**room.launch_body(learner), "id_token": platform_signed(room, claims)}

    response = await client.post("/v1/launches", json=body, headers=EVENTS)

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "lineitem_host_not_allowed"
    assert await count(context, Launch) == 0
    # The student's work arrives anyway, and the workers run: nothing to send, no call.
    event = await client.post(
        "/v1/submission-events", json=room.submitted_event(learner), headers=EVENTS
    )
    assert event.status_code == 202, event.text
    assert event.json()["decision"] == "not_eligible"
    await DeliveryEngine(context).drain()
    assert await count(context, PassbackJob) == 0
    assert victim.requests == []


async def test_a_line_item_no_longer_allowed_when_delivering_is_not_called(
    client: httpx.AsyncClient, context: AppContext, room: RemoteClass, sandbox: RunningSandbox
) -> None:
    """Allowed at launch; the operator then narrows the registration's hosts. The queued
    grade fails with a reason instead of going to a host the registration no longer trusts."""
    learner = room.learners[0]
    launched = await client.post("/v1/launches", json=room.launch_body(learner), headers=EVENTS)
    assert launched.status_code == 201, launched.text
    narrowed = await client.patch(
        f"/v1/platforms/{room.platform_id}",
        json={"allowed_hosts": ["canvas.example.edu"]},
        headers=ADMIN,
    )
    assert narrowed.status_code == 200, narrowed.text
    await sandbox.admin.clear_requests()

    event = await client.post(
        "/v1/submission-events", json=room.submitted_event(learner), headers=EVENTS
    )
    assert event.status_code == 202, event.text
    await DeliveryEngine(context).drain()

    async with context.sessions() as session:
        job = await session.scalar(select(PassbackJob))
    assert job is not None
    assert (job.status, job.outcome_code) == (JobStatus.failed, "url_not_allowed")
    assert await sandbox.admin.requests() == []
    cell = await sandbox.admin.submission(room.assignment_id, learner.user_id)
    assert cell["score"] is None


async def test_registering_a_platform_on_an_internal_address_over_http_is_refused(
    client: httpx.AsyncClient,
) -> None:
    for url in (
        "http://169.254.169.254/token",
        "http://10.0.0.7/token",
        "ftp://canvas.example.edu/t",
    ):
        response = await client.post(
            "/v1/platforms",
            json={
                "issuer": "https://canvas.example.edu",
                "client_id": "1",
                "deployment_ids": ["1"],
                "token_url": url,
                "jwks_url": "https://canvas.example.edu/api/lti/security/jwks",
            },
            headers=ADMIN,
        )
        assert response.status_code == 422, (url, response.text)
