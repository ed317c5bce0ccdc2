"""What an attacker has at hand in the security tests: a server that records every request
it gets (to prove the service never called it), and id_tokens signed however they like."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send

from app.sandbox.jose import rsa_public_jwk, sign_rs256
from app.sandbox.launch import LaunchRequest, launch_claims
from tests.reliability.remote import Learner, RemoteClass
from tests.support.sandbox import LoopbackServer


@dataclass
class RecordingServer:
    """Answers every request with `body` (JSON) and remembers it: method, path, headers."""

    body: dict[str, Any] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.requests.append(
            {"method": scope["method"], "path": scope["path"], "query": scope["query_string"]}
        )
        payload = json.dumps(self.body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


@asynccontextmanager
async def recording_server(body: dict[str, Any] | None = None) -> AsyncIterator[RecordingServer]:
    """A server on 127.0.0.1 (a free port) in a background thread."""
    recorder = RecordingServer(body or {})
    server = LoopbackServer()
    recorder.base_url = server.base_url
    await asyncio.to_thread(server.start, recorder)
    try:
        yield recorder
    finally:
        await asyncio.to_thread(server.stop)


def genuine_claims(room: RemoteClass, learner: Learner) -> dict[str, Any]:
    """The claims the sandbox Canvas would sign for this student's launch."""
    request = LaunchRequest(
        course_id=room.course_id, user=learner.user_id, assignment_id=room.assignment_id
    )
    with room.sandbox.state.lock:
        return launch_claims(room.sandbox.state, room.sandbox.base_url, request)


def platform_signed(room: RemoteClass, claims: dict[str, Any], **header: Any) -> str:
    """Signed with the platform's real key and kid: only the claims (or header) are off."""
    state = room.sandbox.state
    return sign_rs256(claims, state.platform_key, kid=state.platform_kid, header=header)


def public_jwk_of(room: RemoteClass) -> dict[str, str]:
    return rsa_public_jwk(room.sandbox.state.platform_key.public_key())
