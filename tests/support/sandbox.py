"""Run the sandbox Canvas on loopback for tests and benchmarks.

The sandbox is served by uvicorn on ``127.0.0.1`` (a free port) in a background thread with
its own event loop, so it answers whatever the test's loop is doing (even blocking calls such
as pylti1p3's `requests`), and it behaves identically under any pytest-asyncio loop scope.

In a conftest (the fixtures are named ``sandbox_server``, ``sandbox`` and ``tool_key``)::

    from tests.support.sandbox import (  # noqa: F401  (fixtures)
        sandbox_fixture,
        sandbox_server_fixture,
        tool_key_fixture,
    )

In a test::

    async def test_grade_lands(sandbox: RunningSandbox, tool_key: ToolKey) -> None:
        world = await sandbox.admin.scenario(tool_jwks_url=..., points=10, students=2)
        ...  # the service posts a score to world["line_item_url"] ...
        student = world["students"][0]["lti_id"]
        cell = await sandbox.admin.submission(world["assignment_id"], student)
        assert cell["score"] == "8.3"

Or without fixtures::

    async with run_sandbox(SandboxConfig(throttle=ThrottleSettings(enabled=False))) as sb:
        scenario = seed_scenario(sb.state, tool_jwk=tool_key.public_jwk())

`sandbox` (function scope) is the session's server after `reset()`: no records, empty
buckets and log, the configured faults, flags and throttle numbers, the clock on real time.

The sandbox plays several Canvas hosts, each on its own port and database cluster
(`RunningSandbox.hosts`; the first is `base_url`): the session's server has four, on the
clusters of `SESSION_CLUSTERS`. A line item on another host is `host.url_of(line_item_url)`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.sandbox import SandboxConfig, SandboxState, create_sandbox_app
from app.sandbox.config import DEFAULT_CLUSTER, utc_now
from app.sandbox.jose import generate_rsa_key, rsa_public_jwk, sign_rs256
from app.sandbox.protocol import AGS_SCOPES, ASSERTION_TYPE_JWT_BEARER, TOKEN_PATH
from app.sandbox.throttle import ags_bucket_key

START_TIMEOUT_SECONDS = 10.0
SESSION_CLUSTERS = (DEFAULT_CLUSTER, DEFAULT_CLUSTER, "cluster2", "cluster3")
"""The clusters of the session sandbox's hosts: two on one cluster, two on others."""


class TestClock:
    """A clock for the sandbox: real UTC time, shifted by `advance` or stopped by `freeze`."""

    __test__ = False  # not a test class, despite the name

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._frozen_at: datetime | None = None
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            if self._frozen_at is not None:
                return self._frozen_at
            return datetime.now(UTC) + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += timedelta(seconds=seconds)
            else:
                self._offset += timedelta(seconds=seconds)

    def freeze(self) -> datetime:
        """Stop time at now (throttle buckets stop leaking); returns the frozen instant."""
        now = self()
        with self._lock:
            self._frozen_at = now
        return now

    def reset(self) -> None:
        with self._lock:
            self._offset, self._frozen_at = timedelta(0), None

    def timestamp(self) -> int:
        return int(self().timestamp())


@dataclass
class ToolKey:
    """A tool's RSA key pair: publishes its JWK, signs client assertions."""

    private_key: rsa.RSAPrivateKey
    kid: str

    @classmethod
    def generate(cls) -> ToolKey:
        key = generate_rsa_key()
        return cls(private_key=key, kid=rsa_public_jwk(key.public_key())["kid"])

    def public_jwk(self) -> dict[str, str]:
        return rsa_public_jwk(self.private_key.public_key(), kid=self.kid)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.public_jwk()]}

    def private_key_pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def client_assertion(
        self,
        *,
        client_id: str,
        audience: str | list[str],
        now: int | None = None,
        iat: int | None = None,
        exp: int | None = None,
        omit: Sequence[str] = (),
        extra: dict[str, Any] | None = None,
        kid: str | None = None,
    ) -> str:
        """A signed RS256 client assertion as pylti1p3 builds it (iss = sub = client_id)."""
        now = int(time.time()) if now is None else now
        claims: dict[str, Any] = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "iat": now - 5 if iat is None else iat,
            "exp": now + 60 if exp is None else exp,
            "jti": str(uuid.uuid4()),
        }
        claims.update(extra or {})
        for name in omit:
            claims.pop(name, None)
        return sign_rs256(claims, self.private_key, kid=kid or self.kid)


def token_form(
    assertion: str, scopes: Sequence[str] = AGS_SCOPES, **overrides: str
) -> dict[str, str]:
    """The form body of a client-credentials token request."""
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE_JWT_BEARER,
        "client_assertion": assertion,
        "scope": " ".join(scopes),
        **overrides,
    }


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class LoopbackServer:
    """Serve an ASGI app with uvicorn on 127.0.0.1 in a background thread.

    Binds the socket first, so `base_url` is known before the app is built; `extra` more
    sockets (free ports, `ports[1:]`) are served by the same server.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, extra: int = 0) -> None:
        self._sockets = [_bound_socket(host, port)] + [_bound_socket(host, 0) for _ in range(extra)]
        self.host, self.port = self._sockets[0].getsockname()[:2]
        self.ports: list[int] = [sock.getsockname()[1] for sock in self._sockets]
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, app: Any) -> None:
        """Serve `app` and wait until uvicorn listens (blocking; use `asyncio.to_thread`)."""
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": self._sockets}, daemon=True, name="sandbox"
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.base_url} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread (blocking)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=START_TIMEOUT_SECONDS)
        for sock in self._sockets:
            sock.close()


class SandboxAdmin:
    """The sandbox's admin API over HTTP. Methods return the decoded JSON answer and raise
    `httpx.HTTPStatusError` on failure. The underlying client follows the running loop."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        """A client for the running loop (reused; do not close it)."""
        return self._http()

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(base_url=self.base_url, timeout=30)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None

    async def call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        response = await self._http().request(
            method, f"/sandbox/admin{path}", json=json, params=params
        )
        response.raise_for_status()
        return None if response.status_code == 204 else response.json()

    # world
    async def reset(self) -> None:
        await self.call("POST", "/reset")

    async def platform(self) -> dict[str, Any]:
        """``{issuer, token_url, jwks_url, platform_kid}``."""
        result: dict[str, Any] = await self.call("GET", "/platform")
        return result

    async def scenario(self, **fields: Any) -> dict[str, Any]:
        """Key + course with the tool + assignment + students in one call. Fields: tool_jwks_url
        or tool_jwk, client_id, scopes, points, allowed_attempts, students (count or names),
        course_name, assignment_name, launch_url. Returns ids, ``students`` (user_id, lti_id,
        name), issuer/token_url/jwks_url, and ``assignment`` with ``line_item_url``."""
        world: dict[str, Any] = await self.call("POST", "/scenario", json=fields)
        world["line_item_url"] = world["assignment"]["line_item_url"]
        return world

    async def create_developer_key(self, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("POST", "/developer-keys", json=fields)
        return result

    async def update_developer_key(self, client_id: str, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "PATCH", f"/developer-keys/{client_id}", json=fields
        )
        return result

    async def token_grants(self, client_id: str) -> int:
        grants = await self.call("GET", f"/developer-keys/{client_id}/token-grants")
        return int(grants["count"])

    async def create_course(self, **fields: Any) -> dict[str, Any]:
        """Fields: course_id, name, state (available|unpublished|concluded|deleted), tools."""
        result: dict[str, Any] = await self.call("POST", "/courses", json=fields)
        return result

    async def set_course_state(self, course_id: str, state: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "PATCH", f"/courses/{course_id}", json={"state": state}
        )
        return result

    async def install_tool(
        self, course_id: str, client_id: str, deployment_id: str | None = None
    ) -> dict[str, Any]:
        body = {"client_id": client_id, "deployment_id": deployment_id}
        result: dict[str, Any] = await self.call("POST", f"/courses/{course_id}/tools", json=body)
        return result

    async def uninstall_tool(self, course_id: str, client_id: str) -> None:
        await self.call("DELETE", f"/courses/{course_id}/tools/{client_id}")

    async def create_assignment(self, course_id: str, **fields: Any) -> dict[str, Any]:
        """Fields: name, points, client_id, allowed_attempts, grading_type, launch_url."""
        result: dict[str, Any] = await self.call(
            "POST", f"/courses/{course_id}/assignments", json=fields
        )
        return result

    async def set_assignment_points(self, assignment_id: str, points: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "PATCH", f"/assignments/{assignment_id}", json={"points": str(points)}
        )
        return result

    async def set_allowed_attempts(
        self, assignment_id: str, allowed_attempts: int | None
    ) -> dict[str, Any]:
        body = {"allowed_attempts": allowed_attempts}
        result: dict[str, Any] = await self.call(
            "PATCH", f"/assignments/{assignment_id}", json=body
        )
        return result

    async def delete_assignment(self, assignment_id: str, *, keep_line_items: bool = False) -> None:
        params = {"keep_line_items": str(keep_line_items).lower()}
        await self.call("DELETE", f"/assignments/{assignment_id}", params=params)

    async def create_student(self, course_id: str, **fields: Any) -> dict[str, Any]:
        """Fields: name, lti_id, user_id, email, enrollment_state. Returns user_id, lti_id."""
        result: dict[str, Any] = await self.call(
            "POST", f"/courses/{course_id}/students", json=fields
        )
        return result

    async def set_enrollment_state(self, course_id: str, user: str, state: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "PATCH", f"/courses/{course_id}/students/{user}", json={"enrollment_state": state}
        )
        return result

    async def grade_as_teacher(self, assignment_id: str, user: str, score: Any) -> dict[str, Any]:
        body = {"score": None if score is None else str(score)}
        result: dict[str, Any] = await self.call(
            "PUT", f"/assignments/{assignment_id}/grades/{user}", json=body
        )
        return result

    # what a teacher sees
    async def gradebook(self, course_id: str) -> dict[str, Any]:
        response = await self._http().get(f"/sandbox/gradebook/courses/{course_id}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def submission(self, assignment_id: str, user: str) -> dict[str, Any]:
        """One gradebook cell: score (exact string), grade, attempt, url, comments, …"""
        result: dict[str, Any] = await self.call(
            "GET", f"/assignments/{assignment_id}/submissions/{user}"
        )
        return result

    # launches
    async def launch(self, course_id: str, user: str, **fields: Any) -> dict[str, Any]:
        """``{id_token, claims}``. Fields: assignment_id (omit for a course-nav launch),
        client_id, nonce, target_link_uri, roles, forge (expired, wrong_aud, wrong_issuer,
        wrong_deployment, alg_none, hs256_public_key, unknown_kid, bad_signature)."""
        body = {"course_id": course_id, "user": user, **fields}
        result: dict[str, Any] = await self.call("POST", "/launches", json=body)
        return result

    # knobs
    async def set_faults(
        self, *, latency_ms: int = 0, rules: Sequence[dict[str, Any]] = (), seed: int | None = None
    ) -> dict[str, Any]:
        """Replace the run's faults. A rule: {kind: latency|error|too_many_requests|throttle|
        drop, path (regex), method, probability, remaining, delay_ms, status, retry_after,
        phase: before|after}."""
        body = {"latency_ms": latency_ms, "rules": list(rules), "seed": seed}
        result: dict[str, Any] = await self.call("PUT", "/faults", json=body)
        return result

    async def add_fault(self, kind: str, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "POST", "/faults/rules", json={"kind": kind, **fields}
        )
        return result

    async def clear_faults(self) -> None:
        await self.call("DELETE", "/faults")

    async def set_throttle(self, **fields: Any) -> dict[str, Any]:
        """Fields: enabled, high_water, maximum, leak_per_second, up_front_cost, request_cost,
        token_extra_cost."""
        result: dict[str, Any] = await self.call("PATCH", "/throttle", json=fields)
        return result

    async def throttle(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/throttle")
        return result

    async def fill_bucket(self, key: str, count: float) -> dict[str, float]:
        result: dict[str, float] = await self.call(
            "POST", "/throttle/buckets", json={"key": key, "count": count}
        )
        return result

    async def set_flags(self, **flags: bool) -> dict[str, bool]:
        """improved_concluded_response_codes, enforce_iso8601_for_lti_scores,
        remove_top_submitted_at."""
        result: dict[str, bool] = await self.call("PATCH", "/flags", json=flags)
        return result

    async def requests(
        self, *, path_contains: str | None = None, method: str | None = None
    ) -> list[dict[str, Any]]:
        """Logged platform requests, oldest first: method, path, query, status (None when
        dropped), request_headers (no Authorization), request_body, response_body, fault."""
        params = {
            name: value
            for name, value in {"path_contains": path_contains, "method": method}.items()
            if value is not None
        }
        result: list[dict[str, Any]] = await self.call("GET", "/requests", params=params)
        return result

    async def clear_requests(self) -> None:
        await self.call("DELETE", "/requests")


@dataclass(frozen=True)
class CanvasHost:
    """One of the Canvas hosts a sandbox plays: its root URL and database cluster."""

    base_url: str
    cluster: str

    @property
    def netloc(self) -> str:
        """``127.0.0.1:PORT``: how fault rules name the host."""
        return urlsplit(self.base_url).netloc

    def url_of(self, url: str) -> str:
        """`url` (of any of the sandbox's hosts) on this host."""
        parts = urlsplit(url)
        return urlunsplit(parts._replace(scheme="http", netloc=self.netloc))


@dataclass
class RunningSandbox:
    """A sandbox served on loopback: its URL, its state (seed in-process) and admin client."""

    base_url: str
    state: SandboxState
    admin: SandboxAdmin
    clock: TestClock
    server: LoopbackServer = field(repr=False)
    hosts: list[CanvasHost] = field(default_factory=list)
    """Every Canvas host played, `base_url`'s first."""

    def bucket_key(self, client_id: str, host: CanvasHost | None = None) -> str:
        """The throttle bucket of a developer key's AGS calls to `host` (default the first)."""
        cluster = (host or self.hosts[0]).cluster if self.hosts else DEFAULT_CLUSTER
        return ags_bucket_key(client_id, cluster)

    @property
    def token_url(self) -> str:
        return f"{self.base_url}{TOKEN_PATH}"

    @property
    def jwks_url(self) -> str:
        """The platform JWKS (verifies launch id_tokens)."""
        return f"{self.base_url}/api/lti/security/jwks"

    @property
    def issuer(self) -> str:
        return self.state.issuer

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def reset(self) -> None:
        """Back to an empty world with default knobs, and the clock on real time."""
        self.state.reset()
        self.clock.reset()

    async def access_token(
        self, tool_key: ToolKey, client_id: str, scopes: Sequence[str] = AGS_SCOPES
    ) -> str:
        """Obtain an access token over HTTP, as a tool would."""
        assertion = tool_key.client_assertion(
            client_id=client_id, audience=self.token_url, now=self.clock.timestamp()
        )
        response = await self.admin.http.post(self.token_url, data=token_form(assertion, scopes))
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token


@asynccontextmanager
async def run_sandbox(
    config: SandboxConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clusters: Sequence[str] = (DEFAULT_CLUSTER,),
) -> AsyncIterator[RunningSandbox]:
    """Start a fresh sandbox on loopback; stop it on exit.

    `config.base_url` defaults to the bound address; `config.clock` to a `TestClock`. One Canvas
    host is played per entry of `clusters` (its database cluster), the first on `port`.
    """
    config = config or SandboxConfig()
    if isinstance(config.clock, TestClock):
        clock = config.clock
    elif config.clock is utc_now:
        clock = TestClock()
    else:
        raise TypeError("pass a TestClock (or no clock) so tests can move time")
    server = LoopbackServer(host, port, extra=max(0, len(clusters) - 1))
    mapped = dict(zip(server.ports, clusters, strict=True))
    config = replace(
        config,
        clock=clock,
        base_url=config.base_url or server.base_url,
        clusters={**config.clusters, **mapped},
    )
    app = create_sandbox_app(config)
    await asyncio.to_thread(server.start, app)
    admin = SandboxAdmin(server.base_url)
    hosts = [
        CanvasHost(f"http://{server.host}:{bound}", cluster) for bound, cluster in mapped.items()
    ]
    try:
        yield RunningSandbox(server.base_url, app.sandbox_state, admin, clock, server, hosts)
    finally:
        await admin.aclose()
        await asyncio.to_thread(server.stop)


@pytest.fixture(scope="session", name="sandbox_server")
async def sandbox_server_fixture() -> AsyncIterator[RunningSandbox]:
    """One sandbox for the session (Canvas defaults: throttle on), playing four Canvas hosts."""
    async with run_sandbox(clusters=SESSION_CLUSTERS) as running:
        yield running


@pytest.fixture(name="sandbox")
def sandbox_fixture(sandbox_server: RunningSandbox) -> Iterator[RunningSandbox]:
    """The session's sandbox, reset to an empty world before the test."""
    sandbox_server.reset()
    yield sandbox_server


@pytest.fixture(scope="session", name="tool_key")
def tool_key_fixture() -> ToolKey:
    """One tool RSA key for the session (generation is slow)."""
    return ToolKey.generate()


# The fixtures' first import names, kept so existing imports work. Prefer the `*_fixture`
# names: importing these makes ruff report F811 where a test takes the fixture as a parameter.
sandbox = sandbox_fixture
sandbox_server = sandbox_server_fixture
tool_key = tool_key_fixture
