"""A cache of remote JWKS documents (platform keys, the teacher-token issuer's keys).

Keys are kept for `ttl` seconds and fetched again early when a token names a `kid` the cached
set lacks (the issuer rotated), at most once per `refetch_interval` per URL.

A JWKS that is slow or failing costs its callers one fetch, not one each: per URL at most one
fetch is in flight and every caller that needs it waits on that one, for at most `max_wait`
seconds (the fetch itself goes on for the others). A failed fetch is remembered for
`failure_ttl` seconds, during which callers are refused at once instead of fetching again.
The error callers see names no URL and no upstream detail (it may reach unauthenticated
callers); the failure is logged once per fetch instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from app.lti.http import json_document

log = logging.getLogger("passback.jwks")

DEFAULT_MAX_WAIT_SECONDS = 5.0
DEFAULT_FAILURE_TTL_SECONDS = 5.0
DEFAULT_FETCH_TIMEOUT_SECONDS = 15.0


class JwksUnavailableError(Exception):
    """The JWKS could not be fetched or parsed (the message is safe to show anyone)."""


@dataclass
class _Entry:
    key_set: KeySet
    kids: frozenset[str]
    fetched_at: float


@dataclass
class _Failure:
    failed_at: float


class JwksCache:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        ttl: float = 300.0,
        refetch_interval: float = 10.0,
        max_wait: float = DEFAULT_MAX_WAIT_SECONDS,
        failure_ttl: float = DEFAULT_FAILURE_TTL_SECONDS,
        fetch_timeout: float = DEFAULT_FETCH_TIMEOUT_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._ttl = ttl
        self._refetch_interval = refetch_interval
        self._max_wait = max_wait
        self._failure_ttl = failure_ttl
        self._fetch_timeout = fetch_timeout
        self._monotonic = monotonic
        self._entries: dict[str, _Entry] = {}
        self._failures: dict[str, _Failure] = {}
        self._fetches: dict[str, asyncio.Task[_Entry]] = {}

    async def key_set(self, url: str, kid: str | None = None) -> KeySet:
        entry = self._entries.get(url)
        now = self._monotonic()
        fresh = entry is not None and now - entry.fetched_at < self._ttl
        knows_kid = entry is not None and (kid is None or kid in entry.kids)
        if entry is not None and fresh and knows_kid:
            return entry.key_set
        if entry is not None and fresh and now - entry.fetched_at < self._refetch_interval:
            return entry.key_set
        return (await self._fetched(url)).key_set

    async def _fetched(self, url: str) -> _Entry:
        """The entry of the fetch in flight for `url`, or of a new one."""
        fetch = self._fetches.get(url)
        if fetch is None:
            failure = self._failures.get(url)
            if failure is not None and self._monotonic() - failure.failed_at < self._failure_ttl:
                raise JwksUnavailableError("the signing keys cannot be fetched right now")
            fetch = asyncio.create_task(self._fetch(url), name=f"jwks fetch {url}")
            self._fetches[url] = fetch
            fetch.add_done_callback(self._forget)
        try:
            # Shielded: a caller that gives up (or is cancelled) leaves the fetch to the others.
            return await asyncio.wait_for(asyncio.shield(fetch), timeout=self._max_wait)
        except TimeoutError as exc:
            raise JwksUnavailableError("the signing keys are taking too long to fetch") from exc

    def _forget(self, fetch: asyncio.Task[_Entry]) -> None:
        for url, running in list(self._fetches.items()):
            if running is fetch:
                del self._fetches[url]
        if not fetch.cancelled():
            fetch.exception()  # retrieved: every waiter may have given up on it already

    async def _fetch(self, url: str) -> _Entry:
        try:
            async with asyncio.timeout(self._fetch_timeout):
                response = await self._http.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = json_document(response.text)  # ValueError for any garbage
            key_set = KeySet.import_key_set(document)
        except (
            httpx.HTTPError,
            TimeoutError,
            ValueError,
            JoseError,
            TypeError,
            KeyError,
            RecursionError,
        ) as exc:
            self._failures[url] = _Failure(failed_at=self._monotonic())
            log.warning(
                "cannot load JWKS", extra={"url": url, "error": f"{type(exc).__name__}: {exc}"}
            )
            raise JwksUnavailableError("the signing keys cannot be fetched right now") from exc
        self._failures.pop(url, None)
        kids = frozenset(str(key.kid) for key in key_set.keys if key.kid)
        entry = _Entry(key_set=key_set, kids=kids, fetched_at=self._monotonic())
        self._entries[url] = entry
        return entry
