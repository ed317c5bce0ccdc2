"""Server-side request forgery: AGS URLs that point anywhere but the registered Canvas.

A launch carries the line item URL the service will later post grades (with a bearer token)
to. One whose URL names another host (or another port, a userinfo trick, a cloud metadata
address, another scheme) is refused at launch, and the named server never hears from the
service: not at launch, not when the student's work arrives, not when workers run. A URL that
was allowed at launch but is no longer allowed when delivering is not called either.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.config import Settings
from app.context import AppContext
from app.delivery import DeliveryEngine
from app.lti.outcomes import Action, FailureCode, classify_transport_error
from app.lti.urls import host_of, is_public_address
from app.main import create_app
from app.sandbox.jose import generate_rsa_key, sign_rs256
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


# --- names that resolve to internal addresses, and what registration accepts ----------------


@dataclass
class ConnectionCounter:
    """A TCP listener on 127.0.0.1 that only counts the connections it accepts."""

    port: int = 0
    accepted: int = 0


@pytest.fixture
async def listener() -> AsyncIterator[ConnectionCounter]:
    counter = ConnectionCounter()

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counter.accepted += 1
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    counter.port = server.sockets[0].getsockname()[1]
    try:
        yield counter
    finally:
        server.close()
        await server.wait_closed()


def loopback_name() -> str:
    """This machine's own name: not an insecure host, and it resolves to a loopback or
    internal address (127.0.1.1 on Debian, 127.0.0.1 or a private address in containers)."""
    name = socket.gethostname()
    resolved = {entry[4][0] for entry in socket.getaddrinfo(name, None)}
    assert resolved and not any(is_public_address(ip_address(ip)) for ip in resolved), resolved
    return name


async def test_a_name_that_resolves_to_an_internal_address_is_never_connected_to(
    context: AppContext, listener: ConnectionCounter
) -> None:
    """The name passes every check on the URL (https, not an address literal, on the allowed
    hosts); what it resolves to is refused when connecting, by every outbound client."""
    url = f"https://{loopback_name()}:{listener.port}/api/lti/courses/1/line_items"
    with pytest.raises(httpx.ConnectError, match="internal address"):
        await context.http.get(url)
    with pytest.raises(httpx.ConnectError, match="internal address"):
        await context.ags_http.request("GET", url)
    assert listener.accepted == 0


async def test_an_internal_address_literal_that_is_not_an_insecure_host_is_never_connected_to(
    context: AppContext,
) -> None:
    """aiohttp does not ask a resolver about an address literal: the AGS client checks it."""
    counter = ConnectionCounter()

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counter.accepted += 1
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.2", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for url in (f"https://127.0.0.2:{port}/x", f"http://127.0.0.2:{port}/x"):
            with pytest.raises(httpx.ConnectError, match="internal address") as refused:
                await context.ags_http.request("GET", url)
            outcome = classify_transport_error(refused.value, request_sent=True)
            assert outcome.code == FailureCode.url_not_allowed
    finally:
        server.close()
        await server.wait_closed()
    assert counter.accepted == 0


async def test_a_call_refused_for_an_internal_address_fails_at_once_as_url_not_allowed(
    context: AppContext, listener: ConnectionCounter
) -> None:
    """Not a connection error retried until the deadline: the refusal repeats every time."""
    url = f"https://{loopback_name()}:{listener.port}/api/lti/courses/1/line_items"
    with pytest.raises(httpx.ConnectError) as refused:
        await context.ags_http.request("GET", url)
    outcome = classify_transport_error(refused.value, request_sent=True)
    assert (outcome.action, outcome.code) == (Action.failed, FailureCode.url_not_allowed)
    assert "internal address" in (outcome.message or "")
    assert not outcome.outcome_unknown
    assert listener.accepted == 0


async def test_a_launch_whose_platform_keys_are_on_an_internal_address_never_reaches_it(
    client: httpx.AsyncClient, listener: ConnectionCounter
) -> None:
    name = loopback_name()
    registered = await client.post(
        "/v1/platforms",
        json={
            "issuer": "https://canvas.example.edu",
            "client_id": "10000000000007",
            "deployment_ids": ["1"],
            "token_url": f"https://{name}:{listener.port}/login/oauth2/token",
            "jwks_url": f"https://{name}:{listener.port}/api/lti/security/jwks",
        },
        headers=ADMIN,
    )
    assert registered.status_code == 201, registered.text
    claims = {"iss": "https://canvas.example.edu", "aud": "10000000000007", "sub": "u-1"}
    token = sign_rs256(claims, generate_rsa_key(), kid="k-1")
    body = {"id_token": token, "formative_id": "fm-1", "student_id": "s-1", "class_id": "c-1"}

    response = await client.post("/v1/launches", json=body, headers=EVENTS)

    assert response.status_code == 503, response.text
    assert response.json()["code"] == "platform_keys_unavailable"
    assert listener.accepted == 0


REFUSED_ALLOWED_HOSTS = {
    "localhost": "localhost",
    "a subdomain of localhost": "canvas.localhost",
    "cloud metadata": "169.254.169.254",
    "an integer address": "2130706433",
    "a hexadecimal address": "0x7f000001",
    "a short dotted address": "127.1",
    "a private address": "10.0.0.7:443",
    "every .com host": "*.com",
    "every .edu host on a port": "*.edu:8443",
}
REFUSED_URLS = {
    "credentials": "https://admin:hunter2-secret@canvas.example.edu/login/oauth2/token",
    "a user name": "https://admin@canvas.example.edu/login/oauth2/token",
    "cloud metadata": "https://169.254.169.254/latest/meta-data/",
    "loopback by name": "https://localhost/login/oauth2/token",
    "an integer address": "https://2130706433/login/oauth2/token",
    "an IPv6 loopback": "https://[::1]/login/oauth2/token",
    "an IPv4-mapped loopback": "https://[::ffff:127.0.0.1]/login/oauth2/token",
    "the unspecified address": "https://0.0.0.0/login/oauth2/token",
    "plain http": "http://canvas.example.edu/login/oauth2/token",
    "a port beyond 65535": "https://canvas.example.edu:99999/login/oauth2/token",
}
GOOD_PLATFORM = {
    "issuer": "https://canvas.example.edu",
    "client_id": "10000000000009",
    "deployment_ids": ["1"],
    "token_url": "https://canvas.example.edu/login/oauth2/token",
    "jwks_url": "https://canvas.example.edu/api/lti/security/jwks",
    "allowed_hosts": ["canvas.example.edu", "*.instructure.com"],
}


async def production_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API with no insecure hosts, as in production."""
    app = create_app(context=AppContext.build(settings.model_copy(update={"insecure_hosts": []})))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://passback.test") as api:
        yield api
    await app.state.context.close()


@pytest.fixture
async def production(context: AppContext, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for api in production_client(settings):
        yield api


@pytest.mark.parametrize("pattern", list(REFUSED_ALLOWED_HOSTS))
async def test_registration_refuses_allowed_hosts_that_reach_inside_or_too_wide(
    production: httpx.AsyncClient, context: AppContext, pattern: str
) -> None:
    hosts = ["canvas.example.edu", REFUSED_ALLOWED_HOSTS[pattern]]
    created = await production.post(
        "/v1/platforms", json={**GOOD_PLATFORM, "allowed_hosts": hosts}, headers=ADMIN
    )
    assert created.status_code == 422, created.text
    assert created.json()["code"] in ("private_address", "invalid_host", "wildcard_too_broad")

    good = await production.post("/v1/platforms", json=GOOD_PLATFORM, headers=ADMIN)
    assert good.status_code == 201, good.text
    changed = await production.patch(
        f"/v1/platforms/{good.json()['id']}", json={"allowed_hosts": hosts}, headers=ADMIN
    )
    assert changed.status_code == 422, changed.text
    assert (await production.get(f"/v1/platforms/{good.json()['id']}", headers=ADMIN)).json()[
        "allowed_hosts"
    ] == GOOD_PLATFORM["allowed_hosts"]


@pytest.mark.parametrize("field", ["token_url", "jwks_url", "token_audience"])
@pytest.mark.parametrize("refused", list(REFUSED_URLS))
async def test_registration_refuses_urls_with_credentials_or_internal_hosts(
    production: httpx.AsyncClient, context: AppContext, field: str, refused: str
) -> None:
    url = REFUSED_URLS[refused]
    created = await production.post(
        "/v1/platforms", json={**GOOD_PLATFORM, field: url}, headers=ADMIN
    )
    good = await production.post("/v1/platforms", json=GOOD_PLATFORM, headers=ADMIN)
    assert good.status_code == 201, good.text
    changed = await production.patch(
        f"/v1/platforms/{good.json()['id']}", json={field: url}, headers=ADMIN
    )

    for answer in (created, changed):
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "hunter2" not in answer.text
    listed = await production.get("/v1/platforms", headers=ADMIN)
    assert "hunter2" not in listed.text and "admin@" not in listed.text
