"""Pure-ASGI middleware: a request id on every request and answer, a body size limit and a
body read timeout."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import problem_response
from app.logs import request_id_var
from app.metrics import UNMATCHED_ROUTE, Metrics

log = logging.getLogger("passback.http")
REQUEST_ID_HEADER = b"x-request-id"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
DEFAULT_BODY_TIMEOUT_SECONDS = 15.0


class _Disconnected:
    """What `_read_capped` answers when the client left before the end of its body."""


_DISCONNECTED = _Disconnected()


class _RequestIds:
    """Ids for requests that bring none: 32 hex digits, a random half per process and a
    counter (a fresh random id per request cost a system call on the hot path)."""

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)  # a forked worker is another process

    def _renew(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._count = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._count) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


_request_ids = _RequestIds()

Endpoint = Callable[[Request], Awaitable[Response]]
ExceptionHandlers = Mapping[Any, Callable[[Request, Any], Response | Awaitable[Response]]]


class RequestContextMiddleware:
    """Tags the request with an id (the caller's `X-Request-Id` when sane), caps its body, and
    counts it in the instance's metrics by route template and status (the `Metrics` of
    `app.state.context`, looked up on the first request).

    `direct_routes` are (method, path) → endpoint taking the Request: the hot path, called
    here without the router and FastAPI's per-request wrapping (their cost was most of an
    event's own); their errors go to the app's `exception_handlers`, as on any route.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout: float = DEFAULT_BODY_TIMEOUT_SECONDS,
        direct_routes: Mapping[tuple[str, str], Endpoint] | None = None,
        exception_handlers: ExceptionHandlers | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self._deadlines = _BodyDeadlines(body_timeout)
        self.direct_routes = dict(direct_routes or {})
        self.exception_handlers = exception_handlers or {}
        self._metrics: Metrics | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_ids.next()
        declared_length: int | None = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                candidate = value.decode("latin-1")
                if _SAFE_REQUEST_ID.match(candidate):
                    request_id = candidate
            elif name == b"content-length" and value.isdigit():
                declared_length = int(value)
        token = request_id_var.set(request_id)
        header = (REQUEST_ID_HEADER, request_id.encode())
        started = time.perf_counter()
        answered: list[int] = []
        endpoint: Endpoint | None = None
        try:
            if declared_length is not None and declared_length > self.max_body_bytes:
                await self._too_large(scope, receive, self._tagged(send, header, answered))
                return
            if scope["method"] in BODY_METHODS:
                # The whole body is read here, before the app, within `body_timeout`: a
                # client that trickles it in holds a connection and a task only that long.
                task = self._deadlines.begin()
                try:
                    body = await self._read_capped(receive)
                except asyncio.CancelledError:
                    if not self._deadlines.cut_off(task):
                        raise
                    await self._timed_out(scope, receive, self._tagged(send, header, answered))
                    return
                finally:
                    self._deadlines.end(task)
                if isinstance(body, _Disconnected):
                    log.info(
                        "client disconnected before sending its whole request",
                        extra={"path": scope["path"]},
                    )
                    return
                if body is None:
                    await self._too_large(scope, receive, self._tagged(send, header, answered))
                    return
                receive = _replay(body, receive)  # (read in full and capped already)
            else:
                receive = self._limited(receive)
            endpoint = self.direct_routes.get((scope["method"], scope["path"]))
            app = self.app if endpoint is None else self._direct(endpoint)
            await app(scope, receive, self._tagged(send, header, answered))
        finally:
            seconds = time.perf_counter() - started
            metrics = self._metrics or self._find_metrics(scope)
            if metrics is not None:
                metrics.http_answered(
                    scope["method"],
                    _route_template(scope, (scope["method"], scope["path"]) in self.direct_routes),
                    answered[0] if answered else 0,
                    seconds,
                )
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s %s %s",
                    scope["method"],
                    scope["path"],
                    answered[0] if answered else "-",
                    extra={"duration_ms": round(seconds * 1000, 2)},
                )
            request_id_var.reset(token)

    def _find_metrics(self, scope: Scope) -> Metrics | None:
        app = scope.get("app")
        context = getattr(getattr(app, "state", None), "context", None)
        self._metrics = getattr(context, "metrics", None)
        return self._metrics

    def _direct(self, endpoint: Endpoint) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            request = Request(scope, receive, send)
            try:
                response = await endpoint(request)
            except Exception as error:
                handler = next(
                    (
                        self.exception_handlers[kind]
                        for kind in type(error).__mro__
                        if kind in self.exception_handlers
                    ),
                    None,
                )
                if handler is None:
                    raise
                handled = handler(request, error)
                response = await handled if inspect.isawaitable(handled) else handled
            await response(scope, receive, send)

        return app

    async def _read_capped(self, receive: Receive) -> bytes | _Disconnected | None:
        """Read the body; None once it passes the cap (a body sent without Content-Length
        may), `_DISCONNECTED` when the client leaves before its end.

        Read here, before the app, so the answer can still be a clean 413."""
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            whole: bytes = message.get("body", b"")  # the usual case: one message
            return whole if len(whole) <= self.max_body_bytes else None
        chunks: list[bytes] = []
        size = 0
        while True:
            if message["type"] != "http.request":
                return _DISCONNECTED
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
            message = await receive()

    def _limited(self, receive: Receive) -> Receive:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLargeError
            return message

        return limited_receive

    @staticmethod
    def _tagged(send: Send, header: tuple[bytes, bytes], answered: list[int]) -> Send:
        async def tagged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered.append(message["status"])
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        return tagged_send

    async def _timed_out(self, scope: Scope, receive: Receive, send: Send) -> None:
        log.info("request body not received in time", extra={"path": scope["path"]})
        response = problem_response(
            408,
            "request_timeout",
            f"the request body did not arrive within {self.body_timeout:g} s",
            headers={"Connection": "close"},  # uvicorn closes the connection after this
        )
        await response(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413,
            "payload_too_large",
            f"the request body exceeds {self.max_body_bytes} bytes",
        )
        await response(scope, receive, send)


class _BodyDeadlines:
    """Cuts off request bodies still being read `timeout` seconds after they began.

    One watchdog task looks at the reads in progress a few times per timeout, rather than a
    timer per request: on the intake's hot path a timer per request (`asyncio.timeout`)
    cost more than the rest of this middleware. A read is cut off within a quarter of the
    timeout (at most a second) after its deadline, by cancelling the request's task there.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._tick = min(timeout / 4, 1.0)
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._cut: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def begin(self) -> asyncio.Task[Any]:
        task = asyncio.current_task()
        assert task is not None
        loop = task.get_loop()
        self._reading[task] = loop.time() + self.timeout
        watchdog = self._watchdog
        if watchdog is None or watchdog.done() or watchdog.get_loop() is not loop:
            self._watchdog = loop.create_task(self._watch(), name="request body deadlines")
        return task

    def end(self, task: asyncio.Task[Any]) -> None:
        self._reading.pop(task, None)

    def cut_off(self, task: asyncio.Task[Any]) -> bool:
        """Whether the task was cancelled for its deadline (then it is not cancelled any
        more); False for any other cancellation, which goes on."""
        if task not in self._cut:
            return False
        self._cut.discard(task)
        task.uncancel()
        return True

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._reading:
                await asyncio.sleep(self._tick)
                now = loop.time()
                for task, deadline in list(self._reading.items()):
                    if deadline <= now:
                        # The task waits in its read (it leaves `_reading` right after).
                        del self._reading[task]
                        self._cut.add(task)
                        task.cancel()
        finally:
            self._watchdog = None


def _route_template(scope: Scope, direct: bool) -> str:
    """`/v1/formatives/{formative_id}/passback`, not the id itself: bounded label values."""
    if direct:
        return str(scope["path"])
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


def _replay(body: bytes, receive: Receive) -> Receive:
    """The buffered body first, then the client's own messages (e.g. its disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class BodyTooLargeError(Exception):
    """A streamed body grew past the limit (its length was not declared)."""
