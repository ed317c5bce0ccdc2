"""Fault injection: make the platform slow, broken, throttled or rude on purpose.

A `FaultPlan` holds a base latency added to every platform call (token and AGS) and an ordered
list of `FaultRule`s. For each request the rules matching its method and path are considered
in order against one draw of a seeded RNG (a rule naming a `host` applies to that one of the
sandbox's Canvas hosts only): a rule with probability p takes the next p of the
unit interval, so rules of 0.1 each add up to "30% faults" and a rule of 1.0 always fires.
A rule with `remaining` fires that many times, then disappears ("the next N requests").
A request can also name its own fault in the ``X-Sandbox-Fault`` header, e.g.
``error; status=503`` or ``drop; phase=after``.

Kinds: ``latency`` (delay only), ``error`` (5xx with a Canvas body), ``too_many_requests``
(429 with Retry-After), ``throttle`` (Canvas's 403 Rate Limit Exceeded), ``drop`` (reset the
TCP connection without an answer). Every kind honours `delay_ms` first, so a long delay is a
"slow response past the client's timeout". Phase ``after`` lets the request be processed (the
grade lands) before the fault replaces or delays its answer: an attempt of unknown outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import struct
import threading
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.sandbox.errors import UnexpectedError
from app.sandbox.fault_rules import (
    FAULT_HEADER,
    FaultKind,
    FaultPhase,
    FaultRule,
    FaultSettings,
    parse_fault_header,
)
from app.sandbox.rendering import canvas_json
from app.sandbox.throttle import throttled_response
from app.sandbox.urls import is_sandbox_page

ABORT_SCOPE_KEY = "sandbox.abort"
FAULT_SCOPE_KEY = "sandbox.fault"


class FaultPlan:
    """The current faults of one platform. Thread-safe; the RNG is seeded for repeatability."""

    def __init__(self, settings: FaultSettings, seed: int) -> None:
        self._lock = threading.Lock()
        self._default_seed = seed
        self._settings = FaultSettings()
        self._rng = random.Random(seed)
        self.configure(settings)

    def configure(self, settings: FaultSettings) -> None:
        with self._lock:
            self._settings = settings.model_copy(deep=True)
            self._rng = random.Random(
                self._default_seed if settings.seed is None else settings.seed
            )

    def add_rule(self, rule: FaultRule) -> None:
        with self._lock:
            self._settings.rules.append(rule.model_copy())

    def snapshot(self) -> FaultSettings:
        with self._lock:
            return self._settings.model_copy(deep=True)

    def clear(self) -> None:
        self.configure(FaultSettings())

    def latency_for(self, path: str) -> float:
        with self._lock:
            settings = self._settings
            if settings.latency_ms and re.search(settings.latency_path, path):
                return settings.latency_ms / 1000
            return 0.0

    def choose(self, method: str, path: str, host: str | None = None) -> FaultRule | None:
        """Pick the fault for one request (to `host`, as its Host header names it), consuming
        one use of a counted rule."""
        with self._lock:
            candidates = [rule for rule in self._settings.rules if rule.matches(method, path, host)]
            if not candidates:
                return None
            draw = self._rng.random()
            for rule in candidates:
                if draw < rule.probability:
                    chosen = rule.model_copy()
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining == 0:
                            self._settings.rules.remove(rule)
                    return chosen
                draw -= rule.probability
            return None


def error_response(rule: FaultRule) -> Response:
    if rule.kind is FaultKind.TOO_MANY_REQUESTS:
        return canvas_json(
            {"errors": [{"message": "Too Many Requests", "error_code": "too_many_requests"}]},
            status=429,
            headers={"Retry-After": str(rule.retry_after)},
        )
    if rule.kind is FaultKind.THROTTLE:
        return throttled_response()
    return UnexpectedError(rule.status).response()


class ConnectionDropped(ConnectionError):
    """Raised when a drop fault runs under a server whose socket the sandbox cannot reach."""


def transport_abort(send: Send) -> Callable[[], None] | None:
    """A function that resets the client's TCP connection, when the server is uvicorn.

    uvicorn hands the application the bound `send` of its request cycle, which holds the
    asyncio transport. Setting SO_LINGER to 0 before aborting makes the kernel send RST, so
    the client sees "connection reset", not a clean close.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return None

    def abort() -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    return abort


async def drop_connection(scope: Scope, receive: Receive) -> None:
    abort: Callable[[], None] | None = scope.get(ABORT_SCOPE_KEY)
    if abort is None:
        raise ConnectionDropped("fault injection dropped the connection")
    abort()
    # Wait until the server notices, so it does not answer 500 in the application's place.
    async with asyncio.timeout(5):
        while (await receive())["type"] != "http.disconnect":
            pass


class FaultMiddleware:
    """Applies the fault plan to each platform request."""

    def __init__(self, app: ASGIApp, plan: FaultPlan) -> None:
        self._app = app
        self._plan = plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_sandbox_page(scope["path"]):
            await self._app(scope, receive, send)
            return
        try:
            rule = self._rule_for(scope)
        except ValueError as exc:
            body = {"errors": [{"message": str(exc)}]}
            await canvas_json(body, status=400)(scope, receive, send)
            return
        latency = self._plan.latency_for(scope["path"])
        if latency:
            await asyncio.sleep(latency)
        if rule is None:
            await self._app(scope, receive, send)
            return
        scope[FAULT_SCOPE_KEY] = f"{rule.kind.value}:{rule.phase.value}"
        if rule.phase is FaultPhase.BEFORE:
            await asyncio.sleep(rule.delay_ms / 1000)
            await self._act(rule, scope, receive, send, self._app)
            return
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await self._app(scope, receive, hold)
        await asyncio.sleep(rule.delay_ms / 1000)

        async def replay(scope: Scope, receive: Receive, send: Send) -> None:
            for message in held:
                await send(message)

        await self._act(rule, scope, receive, send, replay)

    def _rule_for(self, scope: Scope) -> FaultRule | None:
        host: str | None = None
        for name, value in scope.get("headers", []):
            header = name.decode("latin-1").lower()
            if header == FAULT_HEADER:
                return parse_fault_header(value.decode("latin-1"))
            if header == "host":
                host = value.decode("latin-1")
        return self._plan.choose(scope["method"], scope["path"], host)

    @staticmethod
    async def _act(
        rule: FaultRule, scope: Scope, receive: Receive, send: Send, proceed: ASGIApp
    ) -> None:
        if rule.kind is FaultKind.LATENCY:
            await proceed(scope, receive, send)
        elif rule.kind is FaultKind.DROP:
            await drop_connection(scope, receive)
        else:
            await error_response(rule)(scope, receive, send)
