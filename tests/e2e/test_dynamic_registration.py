"""Installing the tool by LTI Dynamic Registration, end to end: `passback platforms invite`
(the real command), `passback serve` (uvicorn) and the sandbox Canvas playing the platform's
side, over loopback.

The sandbox's admin starts a registration with the invite link; the page the service answers
to the platform's frame is what a Canvas admin sees. After it, the new developer key gets
tokens (the sandbox verifies our assertions through the `jwks_uri` we registered) and a
student's grade lands through the new registration.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import select

from app.clock import utc_now
from app.install import create_invite, invite_url
from app.sandbox.protocol import SCOPE_LINEITEM, SCOPE_RESULT_READONLY, SCOPE_SCORE
from app.store.db import create_engine, create_session_factory
from app.store.models import RegistrationInvite
from tests.api.canvas_world import ADMIN, EVENTS, event
from tests.support import databases
from tests.support.processes import PASSBACK, ServiceProcess, free_port, service_env, start_service
from tests.support.sandbox import (  # noqa: F401  (fixtures)
    RunningSandbox,
    sandbox_fixture,
    sandbox_server_fixture,
)

LAUNCH_URL = "https://formative.example/lti/launch"
LOGIN_URL = "https://formative.example/lti/login"
CLOSE_MESSAGE = "org.imsglobal.lti.close"
DELIVERY_TIMEOUT_SECONDS = 30.0
REGISTRATIONS_PATH = "/api/lti/registrations"


@dataclass
class Installation:
    """The service as an operator runs it, with the settings registrations need."""

    service: ServiceProcess
    api: httpx.AsyncClient
    database_url: str

    @property
    def base_url(self) -> str:
        return self.service.base_url

    async def invite(self, *args: str) -> str:
        """`passback platforms invite ARGS`: the link it prints."""
        process = await asyncio.create_subprocess_exec(
            str(PASSBACK),
            "platforms",
            "invite",
            *args,
            env=self.service.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        return out.decode().strip()

    async def platforms(self) -> list[dict[str, Any]]:
        response = await self.api.get("/v1/platforms", headers=ADMIN)
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()
        return rows


@pytest.fixture(scope="module")
async def installation(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, tool_keys_dir: Path
) -> AsyncIterator[Installation]:
    """One `passback serve` per database for the module (each test uses its own invites and
    sandbox developer keys, so they do not meet)."""
    engine = create_engine(database_url, pool_size=1)
    await databases.empty_all_tables(engine)
    await engine.dispose()
    tmp_path = tmp_path_factory.mktemp("dynreg")
    port = free_port()
    env = service_env(
        database_url,
        var_dir=tmp_path / "var",
        keys_dir=tool_keys_dir,
        worker_poll_interval=0.05,
        log_level="WARNING",
        public_base_url=f"http://127.0.0.1:{port}",
        tool_launch_url=LAUNCH_URL,
        tool_login_url=LOGIN_URL,
    )
    service = await start_service(env, log_path=tmp_path / "service.log", port=port)
    try:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as api:
            yield Installation(service, api, database_url)
    finally:
        await service.terminate()


async def start_registration(sandbox: RunningSandbox, link: str, **fields: Any) -> str:
    """A sandbox admin pastes the link: the URL the platform opens in its frame."""
    started = await sandbox.admin.call("POST", "/registrations", json={"tool_url": link, **fields})
    return str(started["initiation_url"])


async def open_in_platform(url: str) -> httpx.Response:
    """What the admin's browser loads in the platform's frame."""
    async with httpx.AsyncClient(timeout=30) as browser:
        return await browser.get(url)


def error_code(page: httpx.Response) -> str:
    marker = "Error code: <code>"
    assert marker in page.text, page.text
    return page.text.split(marker, 1)[1].split("<", 1)[0]


async def registrations_made(sandbox: RunningSandbox) -> int:
    logged = await sandbox.admin.requests(path_contains=REGISTRATIONS_PATH, method="POST")
    return len([entry for entry in logged if entry["status"] == 200])


async def graded_cell(sandbox: RunningSandbox, assignment_id: str, user: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + DELIVERY_TIMEOUT_SECONDS
    while True:
        cell = await sandbox.admin.submission(assignment_id, user)
        if cell["score"] is not None:
            return cell
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no grade after the timeout: {cell}")
        await asyncio.sleep(0.1)


async def test_dynamic_registration_installs_the_tool_and_grades_flow_through_it(
    installation: Installation, sandbox: RunningSandbox
) -> None:
    link = await installation.invite("--label", "Sandbox district", "--ttl", "2h")
    assert link.startswith(f"{installation.base_url}/lti/registration?invite=")

    page = await open_in_platform(await start_registration(sandbox, link))

    assert page.status_code == 200, page.text
    assert "<script>closeRegistration();</script>" in page.text
    assert CLOSE_MESSAGE in page.text
    assert "Formative is registered" in page.text
    assert "did not grant" not in page.text
    [platform] = [p for p in await installation.platforms() if p["label"] == "Sandbox district"]
    registered = await sandbox.admin.call("GET", f"/registrations/{platform['client_id']}")
    assert platform["issuer"] == sandbox.issuer
    assert platform["deployment_ids"] == [registered["deployment_id"]]
    assert platform["token_url"] == sandbox.token_url
    assert platform["token_audience"] == sandbox.token_url
    assert platform["jwks_url"] == sandbox.jwks_url
    assert platform["allowed_hosts"] == [urlsplit(sandbox.base_url).netloc]
    assert platform["active"] is True
    # What the tool told the platform about itself.
    body = registered["body"]
    assert body["jwks_uri"] == f"{installation.base_url}/.well-known/jwks.json"
    assert body["initiate_login_uri"] == LOGIN_URL
    assert body["redirect_uris"] == [LAUNCH_URL]
    assert {SCOPE_LINEITEM, SCOPE_RESULT_READONLY, SCOPE_SCORE} <= set(body["scope"].split())
    configuration = body["https://purl.imsglobal.org/spec/lti-tool-configuration"]
    assert configuration["target_link_uri"] == LAUNCH_URL
    assert configuration["https://canvas.instructure.com/lti/privacy_level"] == "public"

    # A teacher makes an assignment with the tool; a student opens it and submits.
    client_id = platform["client_id"]
    course = await sandbox.admin.create_course(name="Algebra", tools=[client_id])
    assignment = await sandbox.admin.create_assignment(course["id"], name="Quiz", points="20")
    student = await sandbox.admin.create_student(course["id"], name="Ada Lovelace")
    issued = await sandbox.admin.launch(
        course["id"], student["lti_id"], assignment_id=assignment["id"]
    )
    formative_id = f"fm-{uuid.uuid4().hex[:8]}"
    launch = await installation.api.post(
        "/v1/launches",
        json={
            "id_token": issued["id_token"],
            "formative_id": formative_id,
            "student_id": "s-1",
            "class_id": "c-3",
        },
        headers=EVENTS,
    )
    assert launch.status_code == 201, launch.text
    assert launch.json()["platform_id"] == platform["id"]
    submitted = event(
        event_id=f"evt-{uuid.uuid4().hex}", score=7, max_score=10, **{"formative.id": formative_id}
    )
    answer = await installation.api.post("/v1/submission-events", json=submitted, headers=EVENTS)
    assert answer.status_code == 202, answer.text
    assert answer.json()["decision"] == "queued"

    cell = await graded_cell(sandbox, assignment["id"], student["user_id"])
    assert Decimal(cell["score"]) == Decimal(14)
    # The sandbox granted the token after verifying our assertion with the registered JWKS.
    assert await sandbox.admin.token_grants(client_id) >= 1


async def test_an_invite_registers_only_once(
    installation: Installation, sandbox: RunningSandbox
) -> None:
    link = await installation.invite()
    first = await open_in_platform(await start_registration(sandbox, link))
    assert first.status_code == 200, first.text

    again = await open_in_platform(await start_registration(sandbox, link))

    assert again.status_code == 410
    assert error_code(again) == "invite_used"
    assert "new link" in again.text
    assert await registrations_made(sandbox) == 1


async def test_an_invite_used_twice_at_once_registers_one_platform(
    installation: Installation, sandbox: RunningSandbox
) -> None:
    link = await installation.invite()
    await sandbox.admin.add_fault("latency", path="openid-configuration", delay_ms=300, remaining=2)
    urls = [await start_registration(sandbox, link) for _ in range(2)]

    pages = await asyncio.gather(*(open_in_platform(url) for url in urls))

    assert sorted(page.status_code for page in pages) == [200, 410]
    assert await registrations_made(sandbox) == 1


async def test_an_expired_invite_is_refused(
    installation: Installation, sandbox: RunningSandbox
) -> None:
    engine = create_engine(installation.database_url, pool_size=1)
    try:
        async with create_session_factory(engine)() as session:
            token, _ = await create_invite(
                session, label="", ttl=timedelta(hours=1), now=utc_now() - timedelta(hours=2)
            )
    finally:
        await engine.dispose()
    link = invite_url(installation.base_url, token)

    page = await open_in_platform(await start_registration(sandbox, link))

    assert page.status_code == 410
    assert error_code(page) == "invite_expired"
    assert CLOSE_MESSAGE in page.text  # the admin can still close the dialog
    assert await registrations_made(sandbox) == 0


async def test_an_unknown_invite_is_refused(
    installation: Installation, sandbox: RunningSandbox
) -> None:
    link = invite_url(installation.base_url, "not-an-invite")

    page = await open_in_platform(await start_registration(sandbox, link))

    assert page.status_code == 404
    assert error_code(page) == "invite_unknown"


async def test_a_platform_whose_issuer_is_not_its_address_is_refused(
    installation: Installation, sandbox: RunningSandbox
) -> None:
    link = await installation.invite()

    page = await open_in_platform(
        await start_registration(sandbox, link, issuer="https://canvas.instructure.com")
    )

    assert page.status_code == 502
    assert error_code(page) == "issuer_mismatch"
    assert await registrations_made(sandbox) == 0
    assert [p for p in await installation.platforms() if p["issuer"].startswith("https://")] == []


async def test_a_registration_the_platform_refuses_shows_its_message_and_keeps_the_invite(
    installation: Installation, sandbox: RunningSandbox
) -> None:
    link = await installation.invite()
    without_read_back = [SCOPE_LINEITEM, SCOPE_SCORE]

    refused = await open_in_platform(
        await start_registration(sandbox, link, scopes_supported=without_read_back)
    )

    assert refused.status_code == 502
    assert error_code(refused) == "platform_refused_registration"
    assert "422" in refused.text
    assert "Invalid scopes" in refused.text
    # Nothing was recorded, so the same link works once the platform is fixed.
    retried = await open_in_platform(await start_registration(sandbox, link))
    assert retried.status_code == 200, retried.text


async def test_a_platform_answering_500_is_reported_and_keeps_the_invite(
    installation: Installation, sandbox: RunningSandbox
) -> None:
    link = await installation.invite()
    await sandbox.admin.add_fault("error", path=REGISTRATIONS_PATH, status=503, remaining=1)

    failed = await open_in_platform(await start_registration(sandbox, link))

    assert failed.status_code == 502
    assert error_code(failed) == "platform_refused_registration"
    assert "503" in failed.text
    retried = await open_in_platform(await start_registration(sandbox, link))
    assert retried.status_code == 200, retried.text


async def test_the_invite_link_opened_outside_a_platform_says_where_to_paste_it(
    installation: Installation,
) -> None:
    link = await installation.invite()

    page = await open_in_platform(link)

    assert page.status_code == 400
    assert "Developer Keys" in page.text
    assert "Dynamic Registration" in page.text
    # Looking at the link does not use it up.
    assert parse_qs(urlsplit(link).query)["invite"]


async def test_invites_are_stored_hashed(installation: Installation) -> None:
    link = await installation.invite("--label", "hashed")
    token = parse_qs(urlsplit(link).query)["invite"][0]

    engine = create_engine(installation.database_url, pool_size=1)
    try:
        async with create_session_factory(engine)() as session:
            stored = (
                await session.scalars(
                    select(RegistrationInvite).where(RegistrationInvite.label == "hashed")
                )
            ).one()
    finally:
        await engine.dispose()
    assert stored.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    assert token not in stored.token_sha256


async def test_invite_needs_the_public_base_url(installation: Installation) -> None:
    env = {k: v for k, v in installation.service.env.items() if k != "PASSBACK_PUBLIC_BASE_URL"}
    process = await asyncio.create_subprocess_exec(
        str(PASSBACK),
        "platforms",
        "invite",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 2
    assert out == b""
    assert err.decode().strip().splitlines() == [
        "passback: set PASSBACK_PUBLIC_BASE_URL (where platforms reach this service)"
    ]


async def test_canvas_json_describes_the_tool_for_a_manual_install(
    installation: Installation,
) -> None:
    response = await installation.api.get("/lti/canvas.json")

    assert response.status_code == 200
    config = response.json()
    assert config["title"] == "Formative"
    assert config["description"]
    assert config["target_link_uri"] == LAUNCH_URL
    assert config["oidc_initiation_url"] == LOGIN_URL
    assert config["public_jwk_url"] == f"{installation.base_url}/.well-known/jwks.json"
    assert set(config["scopes"]) == {
        SCOPE_LINEITEM,
        "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly",
        SCOPE_RESULT_READONLY,
        SCOPE_SCORE,
    }
    [extension] = config["extensions"]
    assert extension["platform"] == "canvas.instructure.com"
    assert extension["domain"] == "formative.example"
    assert extension["privacy_level"] == "public"
    placements = {p["placement"]: p for p in extension["settings"]["placements"]}
    assert placements["assignment_selection"]["message_type"] == "LtiDeepLinkingRequest"
    assert placements["assignment_selection"]["target_link_uri"] == LAUNCH_URL
    # The JWKS it names is the one the service publishes.
    jwks = await installation.api.get("/.well-known/jwks.json")
    assert jwks.status_code == 200 and jwks.json()["keys"]


async def test_scopes_the_platform_did_not_grant_are_named_on_the_page(
    installation: Installation, sandbox: RunningSandbox
) -> None:
    link = await installation.invite()

    page = await open_in_platform(
        await start_registration(sandbox, link, scopes_granted=[SCOPE_LINEITEM, SCOPE_SCORE])
    )

    assert page.status_code == 200, page.text
    assert "did not grant" in page.text
    assert SCOPE_RESULT_READONLY in page.text
    # The page stays open for the admin to read (no automatic close).
    assert "<script>closeRegistration();</script>" not in page.text


async def test_invite_refuses_a_lifetime_beyond_thirty_days_in_one_line(
    installation: Installation,
) -> None:
    process = await asyncio.create_subprocess_exec(
        str(PASSBACK),
        "platforms",
        "invite",
        "--ttl",
        "31d",
        env=installation.service.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()

    assert process.returncode == 2
    assert out == b""
    [line] = err.decode().strip().splitlines()
    assert line.startswith("passback: the invite's lifetime must be")


def registration_url(link: str, configuration_url: str) -> str:
    """The invite link as a platform would open it, with a configuration URL of our choosing."""
    query = urlencode({"openid_configuration": configuration_url, "registration_token": "t"})
    return f"{link}&{query}"


async def test_a_platform_that_cannot_be_reached_is_reported_and_keeps_the_invite(
    installation: Installation, sandbox: RunningSandbox
) -> None:
    link = await installation.invite()
    nobody_listens = f"http://127.0.0.1:{free_port()}/api/lti/security/openid-configuration"

    page = await open_in_platform(registration_url(link, nobody_listens))

    assert page.status_code == 502
    assert error_code(page) == "platform_unreachable"
    retried = await open_in_platform(await start_registration(sandbox, link))
    assert retried.status_code == 200, retried.text


async def test_a_configuration_url_on_a_private_address_is_refused_without_calling_it(
    installation: Installation,
) -> None:
    link = await installation.invite()

    page = await open_in_platform(registration_url(link, "https://10.0.0.7/openid-configuration"))

    assert page.status_code == 502
    assert error_code(page) == "platform_url_refused"
