"""A record of every platform request (token, AGS, JWKS) and what the sandbox answered.

Admin and gradebook requests are not recorded. The Authorization header is never kept.
The log is bounded: the oldest entries fall out first.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.sandbox.config import Clock
from app.sandbox.faults import FAULT_SCOPE_KEY
from app.sandbox.urls import is_sandbox_page

BODY_LIMIT = 64 * 1024
HIDDEN_HEADERS = frozenset({"authorization"})


@dataclass(frozen=True)
class LoggedRequest:
    seq: int
    at: datetime
    method: str
    path: str
    query: str
    status: int | None
    """None when the connection was dropped without an answer."""
    request_headers: dict[str, str]
    request_body: str
    response_headers: dict[str, str]
    response_body: str
    duration_ms: float
    fault: str | None
    throttled: bool

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        return data


class RequestLog:
    def __init__(self, limit: int) -> None:
        self._entries: deque[LoggedRequest] = deque(maxlen=limit)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def next_seq(self) -> int:
        with self._lock:
            return next(self._seq)

    def append(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(
        self, *, path_contains: str | None = None, method: str | None = None
    ) -> list[LoggedRequest]:
        with self._lock:
            found = list(self._entries)
        if path_contains is not None:
            found = [entry for entry in found if path_contains in entry.path]
        if method is not None:
            found = [entry for entry in found if entry.method == method.upper()]
        return sorted(found, key=lambda entry: entry.seq)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _text(body: bytes) -> str:
    return body[:BODY_LIMIT].decode("utf-8", errors="replace")


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        if key not in HIDDEN_HEADERS:
            headers[key] = value.decode("latin-1")
    return headers


class RequestLogMiddleware:
    """Records each non-admin request with its answer (outermost of the sandbox's layers)."""

    def __init__(self, app: ASGIApp, log: RequestLog, clock: Clock) -> None:
        self._app = app
        self._log = log
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_sandbox_page(scope["path"]):
            await self._app(scope, receive, send)
            return
        seq = self._log.next_seq()
        at = self._clock()
        started = time.perf_counter()
        request_body = bytearray()
        status: int | None = None
        response_headers: list[tuple[bytes, bytes]] = []
        response_body = bytearray()

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(request_body) < BODY_LIMIT:
                request_body.extend(message.get("body", b""))
            return message

        async def recording_send(message: Message) -> None:
            nonlocal status, response_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body" and len(response_body) < BODY_LIMIT:
                response_body.extend(message.get("body", b""))
            await send(message)

        try:
            await self._app(scope, recording_receive, recording_send)
        finally:
            self._log.append(
                LoggedRequest(
                    seq=seq,
                    at=at,
                    method=scope["method"],
                    path=scope["path"],
                    query=scope.get("query_string", b"").decode("latin-1"),
                    status=status,
                    request_headers=_headers(scope.get("headers", [])),
                    request_body=_text(bytes(request_body)),
                    response_headers=_headers(response_headers),
                    response_body=_text(bytes(response_body)),
                    duration_ms=round((time.perf_counter() - started) * 1000, 3),
                    fault=scope.get(FAULT_SCOPE_KEY),
                    throttled=bool(scope.get("sandbox.throttled")),
                )
            )
