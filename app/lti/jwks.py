"""A cache of remote JWKS documents (platform keys, the teacher-token issuer's keys).

Keys are kept for `ttl` seconds and fetched again early when a token names a `kid` the cached
set lacks (the issuer rotated), at most once per `refetch_interval` per URL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from app.lti.http import json_document


class JwksUnavailableError(Exception):
    """The JWKS could not be fetched or parsed."""


@dataclass
class _Entry:
    key_set: KeySet
    kids: frozenset[str]
    fetched_at: float


class JwksCache:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        ttl: float = 300.0,
        refetch_interval: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._ttl = ttl
        self._refetch_interval = refetch_interval
        self._monotonic = monotonic
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def key_set(self, url: str, kid: str | None = None) -> KeySet:
        entry = self._entries.get(url)
        now = self._monotonic()
        fresh = entry is not None and now - entry.fetched_at < self._ttl
        knows_kid = entry is not None and (kid is None or kid in entry.kids)
        if entry is not None and fresh and knows_kid:
            return entry.key_set
        if entry is not None and fresh and now - entry.fetched_at < self._refetch_interval:
            return entry.key_set
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            current = self._entries.get(url)
            if current is not None and current is not entry:
                return current.key_set
            return (await self._fetch(url)).key_set

    async def _fetch(self, url: str) -> _Entry:
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = json_document(response.text)  # ValueError for any garbage
            key_set = KeySet.import_key_set(document)
        except (httpx.HTTPError, ValueError, JoseError, TypeError, KeyError) as exc:
            raise JwksUnavailableError(f"cannot load JWKS from {url}: {exc}") from exc
        kids = frozenset(str(key.kid) for key in key_set.keys if key.kid)
        entry = _Entry(key_set=key_set, kids=kids, fetched_at=self._monotonic())
        self._entries[url] = entry
        return entry
