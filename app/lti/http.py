"""The outbound HTTP layer: clients for calls to platforms, answers read under a size cap, and
JSON read from them without surprises.

Two clients, one set of rules (explicit timeouts, no redirects, no proxies from the
environment, TLS verified, connections only to public addresses unless the host is an insecure
host: app.lti.egress, and every answer read whole up to `max_answer_bytes`, decompressed):

- `PlatformHttp` (aiohttp) for the AGS calls, the hot path of delivery: line items, scores,
  results. It costs about a tenth of httpx's CPU per request (0.3 ms against 2.5 ms measured
  on the delivery benchmarks), and one pool serves every host. Its failures are raised as
  the httpx errors they correspond to (`_as_httpx_error`), so `classify_transport_error`
  keeps one table for both clients.
- `outbound_http_client` (httpx) for the rest (tokens, JWKS, registration), through
  `CappedTransport`.

An answer past the cap raises `AnswerTooLarge`, an `httpx.DecodingError`, which
`classify_transport_error` makes an `invalid_answer`. `json_document` turns whatever a body
holds (HTML, truncated text, nesting 200,000 levels deep, `NaN`) into a value or a
`ValueError`.
"""

from __future__ import annotations

import codecs
import json
import ssl
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache, cached_property
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx

from app.lti.egress import (
    BlockedAddressError,
    GuardedResolver,
    ResolveTimeout,
    guarded_transport,
    refuse_internal_literal,
)

DEFAULT_MAX_ANSWER_BYTES = 1024 * 1024
"""1 MiB: a page of 100 line items or results is about 50 KB, a JWKS or a token a few KB.
Every byte up to the cap is read and decoded in the event loop before a garbage answer is
refused, so the cap is also what one bad platform's retries cost everyone else (in
tests/reliability/test_poison_soak.py healthy delivery beside a platform answering garbage
ran at 0.78-0.83 of its rate alone with 4 MiB, 0.87-0.94 with 1 MiB)."""
_READ_ENCODINGS = "gzip, deflate"


class AnswerTooLarge(httpx.DecodingError):
    """A platform's answer passed the size cap; `status_code` is the answer's status."""

    def __init__(self, status_code: int, limit: int, request: httpx.Request | None = None) -> None:
        super().__init__(f"the answer is larger than {limit} bytes", request=request)
        self.status_code = status_code


class _Decoder:
    """gzip or deflate, decompressed a piece at a time so the cap counts decoded bytes."""

    def __init__(self, encoding: str) -> None:
        wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}[encoding]
        self._zlib = zlib.decompressobj(wbits)

    def decode(self, chunk: bytes, room: int) -> bytes:
        # At most room + 1 bytes out of each chunk: enough to know the cap is passed.
        out = self._zlib.decompress(chunk, room + 1)
        if self._zlib.unconsumed_tail:
            return out + b"\0"  # more is waiting: past the cap whatever it is
        return out


class CappedTransport(httpx.AsyncBaseTransport):
    """Reads each answer whole, up to `max_bytes`, before handing it over (see the module)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, max_bytes: int) -> None:
        self._inner = inner
        self._max_bytes = max_bytes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        try:
            assert isinstance(response.stream, httpx.AsyncByteStream)
            body = await read_capped(
                response.stream, response.headers, response.status_code, self._max_bytes, request
            )
        finally:
            await response.aclose()
        headers = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in _BODY_HEADERS
        ]
        headers.append(("content-length", str(len(body))))
        return httpx.Response(
            response.status_code,
            headers=headers,
            stream=httpx.ByteStream(body),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


_BODY_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})
"""Headers of the body as sent, not as read (decompressed)."""


async def read_capped(
    chunks: AsyncIterable[bytes],
    headers: Mapping[str, str],
    status: int,
    max_bytes: int,
    request: httpx.Request | None = None,
) -> bytes:
    """An answer's whole body, decompressed: `AnswerTooLarge` past `max_bytes`, read no further
    than that; `httpx.DecodingError` for an encoding not asked for, or corrupt data."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "deflate"):
        raise httpx.DecodingError(f"unsupported content-encoding {encoding!r}")
    declared = headers.get("content-length", "")
    if encoding == "identity" and declared.isdigit() and int(declared) > max_bytes:
        raise AnswerTooLarge(status, max_bytes, request)
    decoder = None if encoding == "identity" else _Decoder(encoding)
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in chunks:
            if decoder is not None:
                chunk = decoder.decode(chunk, max_bytes - size)
            size += len(chunk)
            if size > max_bytes:
                raise AnswerTooLarge(status, max_bytes, request)
            parts.append(chunk)
    except zlib.error as exc:
        raise httpx.DecodingError(f"the answer's {encoding} data is corrupt") from exc
    return b"".join(parts)


@cache
def trust_store() -> ssl.SSLContext:
    """The certificates httpx's clients trust, loaded once per process: loading the CA bundle
    takes tens of milliseconds, and every client of an instance trusts the same ones."""
    return httpx.create_ssl_context()


def outbound_http_client(
    *,
    connect_timeout: float,
    read_timeout: float,
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    max_connections: int = 200,
    insecure_hosts: Iterable[str] = (),
) -> httpx.AsyncClient:
    """A client for calls to platforms: explicit timeouts and connection limits, no redirects,
    every answer capped at `max_answer_bytes`, and connections only to public addresses unless
    the host name is one of `insecure_hosts` (app/lti/egress); the process's `trust_store`
    says which certificates to trust.
    """
    timeout = httpx.Timeout(
        connect=connect_timeout, read=read_timeout, write=read_timeout, pool=read_timeout
    )
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=100)
    transport = guarded_transport(insecure_hosts, verify=trust_store(), limits=limits)
    return httpx.AsyncClient(
        timeout=timeout,
        follow_redirects=False,
        headers={"User-Agent": "passback", "Accept-Encoding": _READ_ENCODINGS},
        transport=CappedTransport(transport, max_answer_bytes),
    )


class AnswerHeaders(Mapping[str, str]):
    """An answer's headers by lower-case name, repeated headers joined with ", " (as httpx
    reads them)."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            earlier = self._values.get(key)
            self._values[key] = value if earlier is None else f"{earlier}, {value}"

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True)
class PlatformAnswer:
    """A platform's answer, read whole (within the cap) and decompressed."""

    status_code: int
    headers: AnswerHeaders
    content: bytes

    @cached_property
    def text(self) -> str:
        """The body as text: the charset the answer names if Python knows it, else UTF-8;
        undecodable bytes replaced."""
        return self.content.decode(_charset(self.headers.get("content-type")), "replace")


def _charset(content_type: str | None) -> str:
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            try:
                return codecs.lookup(value.strip().strip("\"'")).name
            except LookupError:
                break
    return "utf-8"


class PlatformHttp:
    """The client for AGS calls (see the module): one aiohttp session, made on first use in
    the running event loop, closed by `aclose`."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        max_connections: int = 256,
        verify: ssl.SSLContext | bool = True,
        insecure_hosts: Iterable[str] = (),
    ) -> None:
        self._connect_timeout = connect_timeout
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=read_timeout,  # waiting for a pooled connection included (httpx: pool)
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._max_bytes = max_answer_bytes
        self._max_connections = max_connections
        self._verify = verify
        self._insecure_hosts = frozenset(host.lower() for host in insecure_hosts)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                resolver=GuardedResolver(self._insecure_hosts, within=self._connect_timeout),
                ssl=self._verify,
                keepalive_timeout=5.0,  # as httpx: shorter than most servers' idle timeout
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers={"User-Agent": "passback", "Accept-Encoding": _READ_ENCODINGS},
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,  # decompressed here, under the cap
                trust_env=False,
                max_field_size=16 * 1024,
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> PlatformAnswer:
        """Send and read the whole answer. Raises what httpx would: `httpx.ConnectError`
        (its cause a BlockedAddressError for an internal address), `httpx.ConnectTimeout`,
        `httpx.ReadTimeout`, `httpx.RemoteProtocolError`, `httpx.DecodingError`
        (`AnswerTooLarge`), `httpx.InvalidURL`."""
        try:
            refuse_internal_literal(_url_host(url), self._insecure_hosts)
            async with self._open().request(
                method, url, data=content, headers=headers, allow_redirects=False
            ) as response:
                try:
                    body = await read_capped(
                        _chunks(response), response.headers, response.status, self._max_bytes
                    )
                except BaseException:
                    response.close()  # what was not read never will be: the connection goes
                    raise
                return PlatformAnswer(
                    response.status,
                    AnswerHeaders(
                        (name, value)
                        for name, value in response.headers.items()
                        if name.lower() not in _BODY_HEADERS
                    ),
                    body,
                )
        except (httpx.HTTPError, httpx.InvalidURL):
            raise
        except BlockedAddressError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        except Exception as exc:
            error = _as_httpx_error(exc)
            if error is None:
                raise
            raise error from exc

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


async def _chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    while chunk := await response.content.readany():
        yield chunk


def _url_host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _as_httpx_error(error: Exception) -> httpx.HTTPError | httpx.InvalidURL | None:
    """The httpx error an aiohttp failure corresponds to (None: not a transport failure)."""
    message = f"{type(error).__name__}: {error}"
    if isinstance(error, aiohttp.ConnectionTimeoutError | ResolveTimeout):
        return httpx.ConnectTimeout(message)
    if isinstance(error, TimeoutError):  # aiohttp's SocketTimeoutError included
        return httpx.ReadTimeout(message)
    if isinstance(error, aiohttp.InvalidURL):
        return httpx.InvalidURL(message)
    if isinstance(error, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)  # refused, unresolvable, certificate not valid
    if isinstance(error, aiohttp.ClientOSError | ConnectionError):
        return httpx.ReadError(message)  # reset after sending
    if isinstance(error, aiohttp.ClientError):
        return httpx.RemoteProtocolError(message)  # disconnected, cut short, not HTTP
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_document(text: str, *, exact: bool = False) -> Any:
    """The JSON value of a platform's answer, or ValueError for anything else: not JSON,
    truncated, `NaN`/`Infinity`, nested beyond the parser's depth, numbers too long to read.
    `exact`: fractions as Decimal (points must stay exact), else floats."""
    try:
        return json.loads(
            text,
            parse_float=Decimal if exact else float,
            parse_constant=_refuse_constant,
        )
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    except (ValueError, OverflowError, TypeError) as exc:
        raise ValueError(f"not usable JSON: {str(exc)[:200]}") from None
