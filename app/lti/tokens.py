"""Access tokens for LTI Advantage services: one per (registration, scope set) per instance.

A token is reused by every delivery of the instance until shortly before it expires. When many
deliveries ask at once, one request is made and all share its answer (single flight). A
delivery that gets a 401 for a generic token problem calls `invalidate` with the token it used
and asks again: the first such caller makes the cache fetch a new one, the others share it.
Token endpoint errors keep the platform's text and carry a classified `Outcome`; a lasting
refusal (inactive key, scope not granted, bad assertion) is remembered briefly so a queue of
jobs does not hammer the endpoint with requests that cannot succeed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app.clock import Clock, utc_now
from app.lti.assertion import ASSERTION_TYPE_JWT_BEARER, client_assertion
from app.lti.http import json_document
from app.lti.keys import ToolKeyring
from app.lti.outcomes import (
    Action,
    FailureCode,
    Outcome,
    RetryCode,
    classify_token_answer,
    classify_transport_error,
    failure,
    invalid_answer,
)
from app.lti.urls import UnsafeUrlError, check_outbound_url
from app.metrics import Metrics

SCOPE_PREFIX = "https://purl.imsglobal.org/spec/lti-ags/scope/"
SCOPE_LINEITEM_READONLY = SCOPE_PREFIX + "lineitem.readonly"
SCOPE_RESULT_READONLY = SCOPE_PREFIX + "result.readonly"
SCOPE_SCORE = SCOPE_PREFIX + "score"
DELIVERY_SCOPES: tuple[str, ...] = (SCOPE_LINEITEM_READONLY, SCOPE_RESULT_READONLY, SCOPE_SCORE)
"""What a delivery asks for, in one token: read the line item's points, read the student's
result (after a post whose outcome is unknown), post the score."""
OPTIONAL_SCOPES: frozenset[str] = frozenset({SCOPE_RESULT_READONLY})
"""Scopes a delivery can do without: a developer key that lacks them must not stop deliveries
(Canvas refuses a token request naming a scope the key lacks), so the client then asks for
the others only (app.lti.ags)."""

DEFAULT_EXPIRES_IN = 3600
MAX_EXPIRES_IN = 366 * 24 * 3600
REFRESH_MARGIN_CAP = timedelta(minutes=5)
REFRESH_MARGIN_SHARE = 0.1
REFUSAL_MEMORY = timedelta(seconds=10)


class Registration(Protocol):
    """What token acquisition needs of a platform registration (the store's Platform fits)."""

    @property
    def id(self) -> str: ...
    @property
    def client_id(self) -> str: ...
    @property
    def token_url(self) -> str: ...
    @property
    def audience(self) -> str: ...
    @property
    def allowed_hosts(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class RequestRetry:
    """Quick retries inside one attempt, for requests that are safe to repeat."""

    attempts: int = 3
    first_wait: float = 0.1
    max_wait: float = 1.0

    def waiting(self) -> wait_exponential_jitter:
        return wait_exponential_jitter(
            multiplier=self.first_wait, max=self.max_wait, jitter=self.first_wait
        )


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: datetime
    refresh_at: datetime
    """When the cache stops handing it out: shortly before expiry, to allow for clock skew."""
    scopes: tuple[str, ...]


class TokenError(Exception):
    """No token: `outcome` says whether to retry later or fail (and with which code)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.message or outcome.code)
        self.outcome = outcome


def scope_set(scopes: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(scopes)))


CacheKey = tuple[str, str, str, str, tuple[str, ...]]


def _key(registration: Registration, scopes: tuple[str, ...]) -> CacheKey:
    # An edited registration (new client id or token URL) must not reuse old tokens.
    return (
        registration.id,
        registration.client_id,
        registration.token_url,
        registration.audience,
        scopes,
    )


@dataclass(frozen=True)
class _Refusal:
    error: TokenError
    until: datetime


class TokenCache:
    """The instance's access tokens (see the module docstring)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        keyring: ToolKeyring,
        *,
        insecure_hosts: Iterable[str] = (),
        clock: Clock = utc_now,
        retry: RequestRetry | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._http = http
        self._metrics = metrics
        self._keyring = keyring
        self._insecure_hosts = tuple(insecure_hosts)
        self._clock = clock
        self._retry = retry or RequestRetry()
        self._tokens: dict[CacheKey, AccessToken] = {}
        self._fetching: dict[CacheKey, asyncio.Task[AccessToken]] = {}
        self._refusals: dict[CacheKey, _Refusal] = {}
        self.requests_made = 0
        """Token requests sent (for metrics and tests)."""

    async def get(self, registration: Registration, scopes: Iterable[str]) -> AccessToken:
        """A usable token for the scopes; raises TokenError when none can be had."""
        wanted = scope_set(scopes)
        key = _key(registration, wanted)
        now = self._clock()
        token = self._tokens.get(key)
        if token is not None and now < token.refresh_at:
            return token
        refusal = self._refusals.get(key)
        if refusal is not None and now < refusal.until:
            raise refusal.error
        task = self._fetching.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(key, registration, wanted))
            self._fetching[key] = task
            task.add_done_callback(lambda _: self._fetching.pop(key, None))
        return await asyncio.shield(task)

    def invalidate(
        self, registration: Registration, scopes: Iterable[str], token: AccessToken
    ) -> None:
        """Forget `token` (the platform refused it) unless a newer one replaced it already."""
        key = _key(registration, scope_set(scopes))
        if self._tokens.get(key) == token:
            del self._tokens[key]

    def clear(self) -> None:
        self._tokens.clear()
        self._refusals.clear()

    async def _fetch(
        self, key: CacheKey, registration: Registration, scopes: tuple[str, ...]
    ) -> AccessToken:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retry.attempts),
            wait=self._retry.waiting(),
            retry=retry_if_exception(_worth_retrying_now),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    token = await self._counted_request(registration, scopes)
        except TokenError as error:
            if error.outcome.is_failure:
                self._refusals[key] = _Refusal(error, self._clock() + REFUSAL_MEMORY)
            raise
        self._refusals.pop(key, None)
        self._tokens[key] = token
        return token

    async def _counted_request(
        self, registration: Registration, scopes: tuple[str, ...]
    ) -> AccessToken:
        try:
            token = await self._request(registration, scopes)
        except TokenError as error:
            sent = error.outcome.code != FailureCode.url_not_allowed
            if self._metrics is not None and sent:
                self._metrics.token_requested(error.outcome.code)
            raise
        if self._metrics is not None:
            self._metrics.token_requested("ok")
        return token

    async def _request(self, registration: Registration, scopes: tuple[str, ...]) -> AccessToken:
        try:
            check_outbound_url(
                registration.token_url,
                allowed_hosts=registration.allowed_hosts,
                insecure_hosts=self._insecure_hosts,
            )
        except UnsafeUrlError as exc:
            raise TokenError(failure(FailureCode.url_not_allowed, str(exc))) from exc
        now = self._clock()
        assertion = client_assertion(
            self._keyring.current,
            client_id=registration.client_id,
            audience=registration.audience,
            now=now,
        )
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE_JWT_BEARER,
            "client_assertion": assertion,
            "scope": " ".join(scopes),
        }
        self.requests_made += 1
        try:
            response = await self._http.post(
                registration.token_url, data=form, headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise TokenError(classify_transport_error(exc, request_sent=False)) from exc
        if response.status_code != 200:
            raise TokenError(
                classify_token_answer(response.status_code, response.headers, response.text)
            )
        return _parse_token(response, scopes, now)


def _parse_token(response: httpx.Response, scopes: tuple[str, ...], now: datetime) -> AccessToken:
    try:
        document = json_document(response.text)
        if not isinstance(document, dict):
            raise ValueError("it is not a JSON object")
        value = document.get("access_token")
        if not isinstance(value, str) or not value:
            raise ValueError("access_token is missing or empty")
        lifetime = timedelta(seconds=_expires_in(document.get("expires_in", DEFAULT_EXPIRES_IN)))
        expires_at = now + lifetime
    except (ValueError, OverflowError) as exc:
        raise TokenError(
            invalid_answer(response.status_code, f"token answer unusable: {exc}")
        ) from exc
    margin = min(REFRESH_MARGIN_CAP, lifetime * REFRESH_MARGIN_SHARE)
    return AccessToken(
        value=value, expires_at=expires_at, refresh_at=expires_at - margin, scopes=scopes
    )


def _expires_in(value: object) -> int:
    """Seconds from `expires_in`: a whole number (digits in a string pass) from 0 to a year;
    anything else (1e12, Infinity, a boolean, an object) is not a token answer to trust."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 12:
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expires_in {str(value)[:40]!r} is not a whole number of seconds")
    if not 0 <= value <= MAX_EXPIRES_IN:
        raise ValueError(f"expires_in {value} is outside 0 to {MAX_EXPIRES_IN} seconds")
    return value


def _worth_retrying_now(error: BaseException) -> bool:
    """Transient token endpoint trouble is retried at once; throttling is not (it would
    worsen), nor an unusable answer (it waits for the job's backoff)."""
    return (
        isinstance(error, TokenError)
        and error.outcome.action is Action.retry
        and error.outcome.code != RetryCode.invalid_answer
        and not error.outcome.throttled
    )
