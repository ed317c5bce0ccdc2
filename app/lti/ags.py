"""The Assignment and Grade Services client: read line items and results, post scores.

Every call goes through the SSRF guard, carries a cached access token, and turns the answer
into an `Outcome` (app.lti.outcomes). A 401 for a generic token problem makes the client fetch
a fresh token once and resend once. Reads are retried quickly inside the call (tenacity);
score posts are not — each post is an attempt the delivery engine records and schedules.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from app.clock import Clock, utc_now
from app.lti.outcomes import (
    Action,
    FailureCode,
    Outcome,
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

if TYPE_CHECKING:
    from app.context import AppContext

MEDIA_SCORE = "application/vnd.ims.lis.v1.score+json"
MEDIA_LINEITEM = "application/vnd.ims.lis.v2.lineitem+json"
MEDIA_LINEITEM_CONTAINER = "application/vnd.ims.lis.v2.lineitemcontainer+json"
MEDIA_RESULT_CONTAINER = "application/vnd.ims.lis.v2.resultcontainer+json"
CANVAS_SUBMISSION_EXTENSION = "https://canvas.instructure.com/lti/submission"
SUBMISSION_TYPE_LTI_LAUNCH = "basic_lti_launch"
GRADING_FULLY_GRADED = "FullyGraded"
MAX_PAGES = 1000
SAFE_ORIGINS_REMEMBERED = 1024
SCOPES_REFUSED_MEMORY_SECONDS = 3600.0
"""How long a registration whose key lacks an optional scope is asked for the others only."""


# --- Values -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineItem:
    """A line item as read: `points` is its scoreMaximum (the Canvas assignment's points)."""

    url: str
    points: Decimal | None
    label: str | None


@dataclass(frozen=True)
class Result:
    """A student's result on a line item, as the platform stores it.

    `score` and `maximum` are the scoreGiven and scoreMaximum last posted (unscaled; Canvas
    rescales `score` after a teacher's regrade); `submission` is Canvas's submission extension
    of the last accepted post, echoed back (empty elsewhere).
    """

    user_id: str
    score: Decimal | None
    maximum: Decimal | None
    submission: Mapping[str, Any]


@dataclass(frozen=True)
class ResultRead:
    """A student's result (None: the platform has none) and the requests that read it."""

    result: Result | None
    exchanges: tuple[Exchange, ...]


@dataclass(frozen=True)
class Score:
    """One score to post (SPEC §2.4). `timestamp` must be the same on every resend."""

    user_id: str
    score_given: Decimal
    score_maximum: Decimal
    activity_progress: str
    timestamp: datetime
    submitted_at: datetime | None = None
    response_url: str | None = None
    new_submission: bool = True
    comment: str | None = None


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


def iso_millis(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds: ``2026-11-20T14:03:11.250+00:00``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def json_number(value: Decimal) -> int | float:
    """A decimal as a JSON number that reads back exactly (scores are cents, points whole)."""
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def score_payload(score: Score) -> dict[str, Any]:
    """The score+json body: FullyGraded with a scoreGiven always (never a grade-clearing post),
    the submission time, and Canvas's submission extension for SpeedGrader."""
    extension: dict[str, Any] = {"new_submission": score.new_submission}
    if score.response_url:
        extension["submission_type"] = SUBMISSION_TYPE_LTI_LAUNCH
        extension["submission_data"] = score.response_url
    body: dict[str, Any] = {
        "userId": score.user_id,
        "scoreGiven": json_number(score.score_given),
        "scoreMaximum": json_number(score.score_maximum),
        "activityProgress": score.activity_progress,
        "gradingProgress": GRADING_FULLY_GRADED,
        "timestamp": iso_millis(score.timestamp),
    }
    if score.submitted_at is not None:
        body["submission"] = {"submittedAt": iso_millis(score.submitted_at)}
        extension["submitted_at"] = iso_millis(score.submitted_at)
    body[CANVAS_SUBMISSION_EXTENSION] = extension
    if score.comment:
        body["comment"] = score.comment
    return body


# --- Link header ------------------------------------------------------------------------------

_LINK = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]+)*)")
_REL = re.compile(r"""\brel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))""", re.IGNORECASE)


def parse_link_header(value: str | None) -> dict[str, str]:
    """rel → URL from a `Link` header; quoted or bare rel, the URL exactly as given."""
    links: dict[str, str] = {}
    for match in _LINK.finditer(value or ""):
        rel = _REL.search(match.group(2) or "")
        if rel is None:
            continue
        for name in (rel.group(1) or rel.group(2) or "").split():
            links.setdefault(name.lower(), match.group(1).strip())
    return links


# --- The client -------------------------------------------------------------------------------


class RequestGate(Protocol):
    """Paces requests to one platform: a slot per request in flight, told each answer.

    The delivery engine passes its per-platform lane; other callers send ungated. A gate that
    `holds_throttled` makes requests wait in `slot` while the platform throttles, so a
    throttled call may be made again at once.
    """

    @property
    def holds_throttled(self) -> bool: ...

    def slot(self) -> AbstractAsyncContextManager[None]: ...

    def observe(self, outcome: Outcome) -> None: ...


class _Ungated:
    holds_throttled = False

    def slot(self) -> AbstractAsyncContextManager[None]:
        return nullcontext()

    def observe(self, outcome: Outcome) -> None:
        return None


UNGATED: RequestGate = _Ungated()


T = TypeVar("T")


def _is_quickly_retryable(error: BaseException) -> bool:
    return (
        isinstance(error, AgsError)
        and error.outcome.action is Action.retry
        and not error.outcome.throttled
        and error.outcome.retry_after is None
    )


class AgsClient:
    """AGS calls for any registration, over the instance's HTTP clients and token cache."""

    def __init__(
        self,
        http: httpx.AsyncClient | Sequence[httpx.AsyncClient],
        tokens: TokenCache,
        *,
        insecure_hosts: Iterable[str] = (),
        clock: Clock = utc_now,
        retry: RequestRetry | None = None,
    ) -> None:
        clients = (http,) if isinstance(http, httpx.AsyncClient) else tuple(http)
        if not clients:
            raise ValueError("AgsClient needs at least one HTTP client")
        # Requests go round the clients, so each pool stays small (see AppContext.ags_http).
        self._clients = itertools.cycle(clients)
        self._tokens = tokens
        self._insecure_hosts = tuple(insecure_hosts)
        self._safe_origins: set[tuple[str, str, tuple[str, ...]]] = set()
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
                registration, scopes, "GET", lineitem_url, accept=MEDIA_LINEITEM, gate=gate
            )
            exchanges.extend(exchange for exchange, _ in made)
            final, response = made[-1]
            if final.outcome.action is not Action.delivered or response is None:
                raise AgsError(final.outcome, exchanges)
            return _line_item(response, lineitem_url, exchanges)

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
        url = results_url(lineitem_url, user_id)
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
            return ResultRead(_result_of(response, user_id, exchanges), tuple(exchanges))

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
        url: str | None = service_url(lineitem_url, "results")
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
                return _results_of(response, exchanges), following

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
            if final.outcome.action is not Action.delivered or response is None:
                raise AgsError(final.outcome, [exchange for exchange, _ in made])
            items.extend(_line_items(response, url))
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
            service_url(lineitem_url, "scores"),
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
        needs: str | None = None,
    ) -> list[tuple[Exchange, httpx.Response | None]]:
        """Send with a token; on a generic 401, once more with a fresh token. `needs`: an
        optional scope the call cannot do without."""
        self._check_url(registration, url)
        made: list[tuple[Exchange, httpx.Response | None]] = []
        for resend in (False, True):
            token = await self._token(registration, scopes, made, needs)
            headers = {"Authorization": f"Bearer {token.value}", "Accept": accept}
            if content_type is not None:
                headers["Content-Type"] = content_type
            response: httpx.Response | None = None
            async with gate.slot():
                started_at = self._clock()
                try:
                    response = await next(self._clients).request(
                        method, url, content=content, headers=headers
                    )
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
        """The SSRF guard; its verdict depends only on the origin, so it is remembered."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc.lower(), tuple(registration.allowed_hosts))
        if key in self._safe_origins:
            return
        try:
            check_outbound_url(
                url, allowed_hosts=registration.allowed_hosts, insecure_hosts=self._insecure_hosts
            )
        except UnsafeUrlError as exc:
            raise AgsError(failure(FailureCode.url_not_allowed, str(exc))) from exc
        if len(self._safe_origins) >= SAFE_ORIGINS_REMEMBERED:
            self._safe_origins.clear()
        self._safe_origins.add(key)

    async def _token(
        self,
        registration: Registration,
        scopes: Sequence[str],
        made: Sequence[tuple[Exchange, httpx.Response | None]],
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


def _document(response: httpx.Response) -> Any:
    # Decimals, not floats: points like 12.3 must stay exact.
    return json.loads(response.text, parse_float=Decimal)


def _to_line_item(document: Any, fallback_url: str) -> LineItem:
    if not isinstance(document, dict):
        raise ValueError("a line item is a JSON object")
    maximum = document.get("scoreMaximum")
    if maximum is not None and not isinstance(maximum, int | Decimal):
        raise ValueError(f"scoreMaximum {maximum!r} is not a number")
    label = document.get("label")
    url = document.get("id")
    return LineItem(
        url=url if isinstance(url, str) and url else fallback_url,
        points=None if maximum is None else Decimal(maximum),
        label=label if isinstance(label, str) else None,
    )


def _line_item(response: httpx.Response, url: str, exchanges: Sequence[Exchange]) -> LineItem:
    try:
        return _to_line_item(_document(response), url)
    except ValueError as exc:
        raise AgsError(
            invalid_answer(response.status_code, f"line item answer unusable: {exc}"), exchanges
        ) from exc


def results_url(lineitem_url: str, user_id: str) -> str:
    """`{lineitem}/results?user_id=…`, the line item's own query string kept."""
    parts = urlsplit(service_url(lineitem_url, "results"))
    query = "&".join(part for part in (parts.query, urlencode({"user_id": user_id})) if part)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _number(value: Any, name: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError(f"{name} {value!r} is not a number")
    return Decimal(value)


def _result_of(
    response: httpx.Response, user_id: str, exchanges: Sequence[Exchange]
) -> Result | None:
    """The student's result in a results container (at most one with the user_id filter)."""
    try:
        document = _document(response)
        if not isinstance(document, list):
            raise ValueError("a result container is a JSON array")
        for item in document:
            if not isinstance(item, dict):
                raise ValueError("a result is a JSON object")
            if str(item.get("userId")) != user_id:
                continue
            extension = item.get(CANVAS_SUBMISSION_EXTENSION)
            return Result(
                user_id=user_id,
                score=_number(item.get("resultScore"), "resultScore"),
                maximum=_number(item.get("resultMaximum"), "resultMaximum"),
                submission=MappingProxyType(dict(extension) if isinstance(extension, dict) else {}),
            )
        return None
    except ValueError as exc:
        raise AgsError(
            invalid_answer(response.status_code, f"results answer unusable: {exc}"), exchanges
        ) from exc


def _results_of(response: httpx.Response, exchanges: Sequence[Exchange]) -> list[Result]:
    """Every result of a results container page."""
    try:
        document = _document(response)
        if not isinstance(document, list):
            raise ValueError("a result container is a JSON array")
        results = []
        for item in document:
            if not isinstance(item, dict):
                raise ValueError("a result is a JSON object")
            user_id = item.get("userId")
            if not isinstance(user_id, str | int) or isinstance(user_id, bool):
                raise ValueError("a result's userId is missing")
            extension = item.get(CANVAS_SUBMISSION_EXTENSION)
            results.append(
                Result(
                    user_id=str(user_id),
                    score=_number(item.get("resultScore"), "resultScore"),
                    maximum=_number(item.get("resultMaximum"), "resultMaximum"),
                    submission=MappingProxyType(
                        dict(extension) if isinstance(extension, dict) else {}
                    ),
                )
            )
        return results
    except ValueError as exc:
        raise AgsError(
            invalid_answer(response.status_code, f"results answer unusable: {exc}"), exchanges
        ) from exc


def _line_items(response: httpx.Response, url: str) -> list[LineItem]:
    try:
        document = _document(response)
        if not isinstance(document, list):
            raise ValueError("a line item container is a JSON array")
        return [_to_line_item(item, url) for item in document]
    except ValueError as exc:
        raise AgsError(
            invalid_answer(response.status_code, f"line items answer unusable: {exc}")
        ) from exc


async def read_line_item(
    context: AppContext, platform: Registration, lineitem_url: str
) -> LineItem:
    """The line item's current points and label (for previews). Raises AgsError: `.code` is
    `assignment_not_linked` when the line item is gone, or another SPEC §2.6 / retry code."""
    return await context.ags.read_line_item(platform, lineitem_url)
