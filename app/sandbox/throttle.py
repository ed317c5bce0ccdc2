"""Canvas's request throttle: a leaky bucket per client (canvas-ags.md §7).

Each request reserves `up_front_cost` while in flight; when it answers, the reservation is
refunded and its real cost charged. A bucket at or above the high-water mark refuses requests
with a 403 plain-text answer. AGS calls are bucketed per developer key
(``lti_advantage:<client_id>``), token requests per client IP, and each token request costs an
extra 200.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.sandbox.config import ThrottleSettings
from app.sandbox.jose import JoseError, parse_compact
from app.sandbox.protocol import AGS_PATH_PREFIX, TOKEN_PATH

THROTTLED_BODY = b"403 Forbidden (Rate Limit Exceeded)\n"
HEADER_COST = "X-Request-Cost"
HEADER_REMAINING = "X-Rate-Limit-Remaining"


def throttled_response() -> Response:
    """Canvas's throttled answer: plain text, remaining 0.0, no cost header."""
    return Response(
        THROTTLED_BODY,
        status_code=403,
        headers={HEADER_REMAINING: "0.0"},
        media_type="text/plain; charset=utf-8",
    )


def format_units(value: float) -> str:
    """Render bucket units as Ruby prints floats (``600.0``, ``599.9``)."""
    return repr(float(round(value, 4)))


@dataclass
class LeakyBucket:
    count: float = 0.0
    touched_at: float | None = None


@dataclass(frozen=True)
class Admission:
    """A request let through: which bucket it reserved capacity in, and how much."""

    key: str
    reserved: float


class Throttle:
    """All buckets of one platform. Thread-safe; `seconds` is the clock in seconds."""

    def __init__(self, settings: ThrottleSettings, seconds: Callable[[], float]) -> None:
        self._settings = replace(settings)
        self._seconds = seconds
        self._buckets: dict[str, LeakyBucket] = {}
        self._lock = threading.Lock()

    @property
    def settings(self) -> ThrottleSettings:
        with self._lock:
            return replace(self._settings)

    def configure(self, settings: ThrottleSettings) -> None:
        with self._lock:
            self._settings = replace(settings)

    def _increment(self, key: str, amount: float) -> float:
        """Leak the bucket to now, add `amount` (clamped to 0..maximum); return the count."""
        bucket = self._buckets.setdefault(key, LeakyBucket())
        now = self._seconds()
        if bucket.touched_at is not None and now > bucket.touched_at:
            leaked = (now - bucket.touched_at) * self._settings.leak_per_second
            bucket.count = max(0.0, bucket.count - leaked)
        bucket.touched_at = now if bucket.touched_at is None else max(now, bucket.touched_at)
        bucket.count = min(max(0.0, bucket.count + amount), self._settings.maximum)
        return bucket.count

    def admit(self, key: str) -> Admission | None:
        """Reserve the up-front cost, or return None when the bucket is full (throttled)."""
        with self._lock:
            count = self._increment(key, 0.0)
            if self._settings.enabled and count >= self._settings.high_water:
                return None
            reserved = self._settings.up_front_cost
            self._increment(key, reserved)
            return Admission(key, reserved)

    def complete(self, admission: Admission, cost: float) -> float:
        """Refund the reservation, charge `cost`; return what remains below the high-water."""
        with self._lock:
            count = self._increment(admission.key, cost - admission.reserved)
            return self._settings.high_water - count

    def cost_of(self, path: str) -> float:
        with self._lock:
            cost = self._settings.request_cost
            return cost + self._settings.token_extra_cost if path == TOKEN_PATH else cost

    def fill(self, key: str, count: float) -> None:
        """Set a bucket's level (tests use it to stage a throttling storm)."""
        with self._lock:
            self._increment(key, 0.0)
            self._buckets[key].count = max(0.0, min(count, self._settings.maximum))

    def levels(self) -> dict[str, float]:
        """Each bucket's current count, leaked to now."""
        with self._lock:
            return {key: self._increment(key, 0.0) for key in list(self._buckets)}

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


def is_throttled_path(path: str) -> bool:
    return path.startswith(AGS_PATH_PREFIX) or path == TOKEN_PATH


def ags_bucket_key(client_id: str, cluster: str) -> str:
    """Canvas's bucket of one developer key's AGS calls on one database cluster."""
    return f"lti_advantage:{client_id}-{cluster}"


def bucket_key(scope: Scope, cluster: str) -> str:
    """``lti_advantage:<client_id>-<cluster>`` for AGS calls bearing a token, else
    ``ip:<address>``.

    Like Canvas's middleware this runs before authentication, so the token's ``sub`` is read
    without verifying it.
    """
    path: str = scope["path"]
    if path != TOKEN_PATH:
        authorization = Headers(scope=scope).get("authorization", "")
        if authorization.startswith("Bearer "):
            try:
                subject = parse_compact(authorization[len("Bearer ") :].strip()).claims.get("sub")
            except JoseError:
                subject = None
            if isinstance(subject, str) and subject:
                return ags_bucket_key(subject, cluster)
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


class ThrottleMiddleware:
    """Applies the throttle to AGS and token requests and adds the rate-limit headers."""

    def __init__(
        self, app: ASGIApp, throttle: Throttle, cluster_of: Callable[[int | None], str]
    ) -> None:
        self._app = app
        self._throttle = throttle
        self._cluster_of = cluster_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_throttled_path(scope["path"]):
            await self._app(scope, receive, send)
            return
        server = scope.get("server")
        cluster = self._cluster_of(server[1] if server else None)
        admission = self._throttle.admit(bucket_key(scope, cluster))
        if admission is None:
            scope["sandbox.throttled"] = True
            await throttled_response()(scope, receive, send)
            return
        cost = self._throttle.cost_of(scope["path"])
        settled = False

        async def send_with_headers(message: Message) -> None:
            nonlocal settled
            if message["type"] == "http.response.start" and not settled:
                settled = True
                remaining = self._throttle.complete(admission, cost)
                headers = message.get("headers", [])
                if any(name.lower() == HEADER_REMAINING.lower().encode() for name, _ in headers):
                    await send(message)  # an injected throttle answer keeps its own headers
                    return
                message["headers"] = [
                    *message.get("headers", []),
                    (HEADER_COST.lower().encode(), format_units(cost).encode()),
                    (HEADER_REMAINING.lower().encode(), format_units(remaining).encode()),
                ]
            await send(message)

        try:
            await self._app(scope, receive, send_with_headers)
        finally:
            if not settled:
                self._throttle.complete(admission, cost)
