"""The Assignment and Grade Services client: read line items and results, post scores.

Every call goes through the SSRF guard, carries a cached access token, and turns the answer
into an `Outcome` (app.lti.outcomes). A 401 for a generic token problem makes the client fetch
a fresh token once and resend once. Reads are retried quickly inside the call (tenacity);
score posts are not — each post is an attempt the delivery engine records and schedules.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from app.clock import Clock, utc_now
from app.lti.ags_documents import (
    MEDIA_LINEITEM,
    MEDIA_LINEITEM_CONTAINER,
    MEDIA_RESULT_CONTAINER,
    MEDIA_SCORE,
    LineItem,
    Result,
    Score,
    line_item_of,
    line_items_of,
    parse_link_header,
    result_of,
    results_of,
    results_url,
    score_payload,
)
from app.lti.http import PlatformAnswer, PlatformHttp
from app.lti.outcomes import (
    Action,
    FailureCode,
    Outcome,
    RetryCode,
    classify_ags_answer,
    classify_transport_error,
    failure,
    invalid_answer,
)
from app.lti.tokens import (
    DELIVERY_SCOPES,
    OPTIONAL_SCOPES,
    SCOPE_RESULT_READONLY,
    AccessToken,
    Registration,
    RequestRetry,
    TokenCache,
    TokenError,
)
from app.lti.urls import UnsafeUrlError, check_outbound_url, service_url

MAX_PAGES = 1000
SAFE_ORIGINS_REMEMBERED = 1024
SENDABLE_URLS_REMEMBERED = 4096
SCOPES_REFUSED_MEMORY_SECONDS = 3600.0
"""How long a registration whose key lacks an optional scope is asked for the others only."""


# --- What calls return -----------------------------------------------------------------------


@dataclass(frozen=True)
class ResultRead:
    """A student's result (None: the platform has none) and the requests that read it."""

    result: Result | None
    exchanges: tuple[Exchange, ...]


@dataclass(frozen=True)
class Exchange:
    """One request and what its answer means, with when it started and ended."""

    outcome: Outcome
    started_at: datetime
    finished_at: datetime


class AgsError(Exception):
    """A call that did not succeed; `outcome` is the final classification, `exchanges` every
    request made (empty when none was sent, e.g. no token or a refused URL)."""

    def __init__(self, outcome: Outcome, exchanges: Sequence[Exchange] = ()) -> None:
        super().__init__(outcome.message or outcome.code)
        self.outcome = outcome
        self.exchanges = tuple(exchanges)

    @property
    def code(self) -> str:
        return self.outcome.code


# --- The client -------------------------------------------------------------------------------


class RequestGate(Protocol):
    """Paces requests to one platform: a slot per request in flight, told each answer.

    The delivery engine passes its per-platform lane; other callers send ungated. A gate that
    `holds_throttled` makes requests wait in `slot` while the platform throttles, so a
    throttled call may be made again at once. A request that others wait for (a line item
    read that many deliveries share) asks for its slot `ahead` of the waiting ones.
    """

    @property
    def holds_throttled(self) -> bool: ...

    def slot(self, *, ahead: bool = False) -> AbstractAsyncContextManager[None]: ...

    def observe(self, outcome: Outcome) -> None: ...


class _Ungated:
    holds_throttled = False

    def slot(self, *, ahead: bool = False) -> AbstractAsyncContextManager[None]:
        return nullcontext()

    def observe(self, outcome: Outcome) -> None:
        return None


UNGATED: RequestGate = _Ungated()


T = TypeVar("T")


def _is_quickly_retryable(error: BaseException) -> bool:
    """Transient trouble, tried again at once; not throttling, and not an unusable answer
    (garbage now is garbage in a second: it waits for the job's backoff)."""
    return (
        isinstance(error, AgsError)
        and error.outcome.action is Action.retry
        and error.outcome.code != RetryCode.invalid_answer
        and not error.outcome.throttled
        and error.outcome.retry_after is None
    )


class AgsClient:
    """AGS calls for any registration, over the instance's HTTP clients and token cache."""

    def __init__(
        self,
        http: PlatformHttp,
        tokens: TokenCache,
        *,
        insecure_hosts: Iterable[str] = (),
        clock: Clock = utc_now,
        retry: RequestRetry | None = None,
    ) -> None:
        self._http = http
        self._tokens = tokens
        self._insecure_hosts = tuple(insecure_hosts)
        self._safe_origins: set[tuple[str, str, tuple[str, ...]]] = set()
        self._sendable_urls: set[str] = set()
        self._clock = clock
        self._retry = retry or RequestRetry()
        self._without_optional: dict[tuple[str, str], float] = {}
        """Registrations whose key refused the optional scopes, and until when (monotonic)."""

    @property
    def tokens(self) -> TokenCache:
        return self._tokens

    async def read_line_item(
        self,
        registration: Registration,
        lineitem_url: str,
        *,
        scopes: Sequence[str] = DELIVERY_SCOPES,
        gate: RequestGate = UNGATED,
    ) -> LineItem:
        """Read one line item; raises AgsError (code `assignment_not_linked` when it is gone)."""
        exchanges: list[Exchange] = []

        async def read_once() -> LineItem:
            made = await self._exchange(
                registration,
                scopes,
                "GET",
                lineitem_url,
                accept=MEDIA_LINEITEM,
                gate=gate,
                ahead=True,  # every delivery of the line item waits for it
            )
            exchanges.extend(exchange for exchange, _ in made)
            final, response = made[-1]
            if final.outcome.action is not Action.delivered or response is None:
                raise AgsError(final.outcome, exchanges)
            return _read(line_item_of, response, lineitem_url, "line item", exchanges)

        return await self._quickly_retried(read_once)

    async def read_result(
        self,
        registration: Registration,
        lineitem_url: str,
        user_id: str,
        *,
        scopes: Sequence[str] = DELIVERY_SCOPES,
        gate: RequestGate = UNGATED,
    ) -> ResultRead:
        """The student's result on the line item: `GET {lineitem}/results?user_id=…`.

        Raises AgsError when it cannot be read (the key lacks `result.readonly`: code
        `scope_not_granted`; refused; unusable).
        """
        url = self._service(results_url, lineitem_url, user_id)
        exchanges: list[Exchange] = []

        async def read_once() -> ResultRead:
            made = await self._exchange(
                registration,
                scopes,
                "GET",
                url,
                accept=MEDIA_RESULT_CONTAINER,
                gate=gate,
                needs=SCOPE_RESULT_READONLY,
            )
            exchanges.extend(exchange for exchange, _ in made)
            final, response = made[-1]
            if final.outcome.action is not Action.delivered or response is None:
                raise AgsError(final.outcome, exchanges)
            result = _read(result_of, response, user_id, "results", exchanges)
            return ResultRead(result, tuple(exchanges))

        return await self._quickly_retried(read_once)

    async def read_results(
        self,
        registration: Registration,
        lineitem_url: str,
        *,
        scopes: Sequence[str] = DELIVERY_SCOPES,
        gate: RequestGate = UNGATED,
    ) -> list[Result]:
        """Every student's result on the line item: `GET {lineitem}/results`, following
        `Link: rel=next` pages (one paged read for a whole class).

        Raises AgsError when it cannot be read (the key lacks `result.readonly`: code
        `scope_not_granted`; refused; unusable).
        """
        results: list[Result] = []
        url: str | None = self._service(service_url, lineitem_url, "results")
        seen: set[str] = set()
        while url is not None and url not in seen and len(seen) < MAX_PAGES:
            seen.add(url)

            async def read_page(page_url: str = url) -> tuple[list[Result], str | None]:
                made = await self._exchange(
                    registration,
                    scopes,
                    "GET",
                    page_url,
                    accept=MEDIA_RESULT_CONTAINER,
                    gate=gate,
                    needs=SCOPE_RESULT_READONLY,
                )
                exchanges = [exchange for exchange, _ in made]
                final, response = made[-1]
                if final.outcome.action is not Action.delivered or response is None:
                    raise AgsError(final.outcome, exchanges)
                following = parse_link_header(response.headers.get("link")).get("next")
                return _read(results_of, response, "", "results", exchanges), following

            page, url = await self._quickly_retried(read_page)
            results.extend(page)
        return results

    async def _quickly_retried(self, read_once: Callable[[], Awaitable[T]]) -> T:
        """A read, tried again at once after a transient failure (not after throttling)."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retry.attempts),
            wait=self._retry.waiting(),
            retry=retry_if_exception(_is_quickly_retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await read_once()
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def line_items(
        self,
        registration: Registration,
        lineitems_url: str,
        *,
        scopes: Sequence[str] = DELIVERY_SCOPES,
        gate: RequestGate = UNGATED,
    ) -> list[LineItem]:
        """Every line item of a container, following `Link: rel=next` pages."""
        items: list[LineItem] = []
        url: str | None = lineitems_url
        seen: set[str] = set()
        while url is not None and url not in seen and len(seen) < MAX_PAGES:
            seen.add(url)
            made = await self._exchange(
                registration, scopes, "GET", url, accept=MEDIA_LINEITEM_CONTAINER, gate=gate
            )
            final, response = made[-1]
            exchanges = [exchange for exchange, _ in made]
            if final.outcome.action is not Action.delivered or response is None:
                raise AgsError(final.outcome, exchanges)
            items.extend(_read(line_items_of, response, url, "line items", exchanges))
            url = parse_link_header(response.headers.get("link")).get("next")
        return items

    async def post_score(
        self,
        registration: Registration,
        lineitem_url: str,
        score: Score,
        *,
        scopes: Sequence[str] = DELIVERY_SCOPES,
        after_unknown: bool = False,
        gate: RequestGate = UNGATED,
    ) -> list[Exchange]:
        """POST the score to `{lineitem}/scores`; every exchange made, the last one decisive.

        Raises AgsError only when nothing could be sent (no token, URL refused).
        """
        content = json.dumps(score_payload(score), separators=(",", ":")).encode()
        made = await self._exchange(
            registration,
            scopes,
            "POST",
            self._service(service_url, lineitem_url, "scores"),
            accept="application/json",
            content=content,
            content_type=MEDIA_SCORE,
            after_unknown=after_unknown,
            gate=gate,
        )
        return [exchange for exchange, _ in made]

    async def _exchange(
        self,
        registration: Registration,
        scopes: Sequence[str],
        method: str,
        url: str,
        *,
        accept: str,
        content: bytes | None = None,
        content_type: str | None = None,
        after_unknown: bool = False,
        gate: RequestGate = UNGATED,
        ahead: bool = False,
        needs: str | None = None,
    ) -> list[tuple[Exchange, PlatformAnswer | None]]:
        """Send with a token; on a generic 401, once more with a fresh token. `needs`: an
        optional scope the call cannot do without; `ahead`: others wait for this call (see
        `RequestGate`)."""
        self._check_url(registration, url)
        made: list[tuple[Exchange, PlatformAnswer | None]] = []
        for resend in (False, True):
            token = await self._token(registration, scopes, made, needs)
            headers = {"Authorization": f"Bearer {token.value}", "Accept": accept}
            if content_type is not None:
                headers["Content-Type"] = content_type
            response: PlatformAnswer | None = None
            async with gate.slot(ahead=ahead):
                started_at = self._clock()
                try:
                    response = await self._http.request(
                        method, url, content=content, headers=headers
                    )
                except (httpx.InvalidURL, UnicodeError) as exc:
                    # A URL the SSRF guard let through but httpx will not send (a tab at
                    # its end, say): nothing was sent, and nothing ever will be.
                    raise AgsError(_unusable_url(url, exc), [e for e, _ in made]) from exc
                except httpx.HTTPError as exc:
                    outcome = classify_transport_error(exc, request_sent=content is not None)
                else:
                    outcome = classify_ags_answer(
                        response.status_code,
                        response.headers,
                        response.text,
                        after_unknown=after_unknown,
                    )
                gate.observe(outcome)
            if outcome.action is Action.refresh_token:
                if resend:
                    outcome = failure(
                        FailureCode.access_token_rejected, outcome.message, outcome.http_status
                    )
                else:
                    self._tokens.invalidate(registration, token.scopes, token)
            made.append((Exchange(outcome, started_at, self._clock()), response))
            if outcome.action is not Action.refresh_token:
                return made
        return made  # pragma: no cover - the loop returns on its second pass

    def _check_url(self, registration: Registration, url: str) -> None:
        """The SSRF guard; its verdict depends only on the origin, so it is remembered. A URL
        httpx would refuse to send (a tab in it, a port out of range) is refused first."""
        try:
            self._sendable(url)
            parts = urlsplit(url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise AgsError(_unusable_url(url, exc)) from exc
        key = (parts.scheme, parts.netloc.lower(), tuple(registration.allowed_hosts))
        if key in self._safe_origins:
            return
        try:
            check_outbound_url(
                url, allowed_hosts=registration.allowed_hosts, insecure_hosts=self._insecure_hosts
            )
        except UnsafeUrlError as exc:
            raise AgsError(failure(FailureCode.url_not_allowed, str(exc))) from exc
        except ValueError as exc:  # a port out of range, a broken IPv6 literal, …
            raise AgsError(_unusable_url(url, exc)) from exc
        if len(self._safe_origins) >= SAFE_ORIGINS_REMEMBERED:
            self._safe_origins.clear()
        self._safe_origins.add(key)

    def _sendable(self, url: str) -> None:
        """Raises httpx.InvalidURL for a URL httpx would not send. Those it would are
        remembered (a line item's URLs serve each of its students; parsing costs CPU)."""
        if url in self._sendable_urls:
            return
        httpx.URL(url)
        if len(self._sendable_urls) >= SENDABLE_URLS_REMEMBERED:
            self._sendable_urls.clear()
        self._sendable_urls.add(url)

    def _service(self, build: Callable[[str, str], str], lineitem_url: str, argument: str) -> str:
        """A service URL built from a line item URL, or AgsError when that URL cannot be one
        (urlsplit would quietly drop a tab that httpx refuses: the line item URL is checked as
        is)."""
        try:
            self._sendable(lineitem_url)
            return build(lineitem_url, argument)
        except (httpx.InvalidURL, ValueError) as exc:
            raise AgsError(_unusable_url(lineitem_url, exc)) from exc

    async def _token(
        self,
        registration: Registration,
        scopes: Sequence[str],
        made: Sequence[tuple[Exchange, PlatformAnswer | None]],
        needs: str | None = None,
    ) -> AccessToken:
        """A token for `scopes`, or for those not optional when the key refuses those."""
        exchanges = [exchange for exchange, _ in made]
        key = (registration.id, registration.client_id)
        narrowed = time.monotonic() < self._without_optional.get(key, -math.inf)
        wanted = [scope for scope in scopes if not (narrowed and scope in OPTIONAL_SCOPES)]
        if needs is not None and needs not in wanted:
            message = f"the developer key does not grant the scope {needs}"
            raise AgsError(failure(FailureCode.scope_not_granted, message), exchanges)
        try:
            return await self._tokens.get(registration, wanted)
        except TokenError as error:
            essential = [scope for scope in wanted if scope not in OPTIONAL_SCOPES]
            refused = error.outcome.code == FailureCode.scope_not_granted
            if not refused or essential == wanted:
                raise AgsError(error.outcome, exchanges) from error
        # The key lacks an optional scope (or more): deliver with the others meanwhile.
        self._without_optional[key] = time.monotonic() + SCOPES_REFUSED_MEMORY_SECONDS
        return await self._token(registration, scopes, made, needs)


def _unusable_url(url: str, error: Exception) -> Outcome:
    return failure(FailureCode.url_not_allowed, f"{url[:300]!r} is not a usable URL: {error}")


A = TypeVar("A")


def _read(
    reader: Callable[[str, str], A],
    response: PlatformAnswer,
    argument: str,
    what: str,
    exchanges: list[Exchange],
) -> A:
    """What a 2xx answer holds, or AgsError(invalid_answer) when it cannot be used (the
    last exchange, the answer's, is then recorded as invalid_answer, not as a success)."""
    try:
        return reader(response.text, argument)
    except ValueError as exc:
        outcome = invalid_answer(response.status_code, f"{what} answer unusable: {exc}")
        last = exchanges[-1]
        exchanges[-1] = Exchange(outcome, last.started_at, last.finished_at)
        raise AgsError(outcome, exchanges) from exc
