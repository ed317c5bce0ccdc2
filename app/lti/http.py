"""The outbound HTTP layer: clients for calls to platforms, answers read under a size cap, and
JSON read from them without surprises.

Every answer a platform sends (token, AGS line items, scores and results, JWKS) passes through
`CappedTransport`: the body is read as it streams and the call is aborted once it passes
`max_answer_bytes` (decompressed), raising `AnswerTooLarge`. It is an `httpx.DecodingError`,
so callers that treat transport failures already handle it; `classify_transport_error` makes
it an `invalid_answer`. `json_document` turns whatever a body holds (HTML, truncated text,
nesting 200,000 levels deep, `NaN`) into a value or a `ValueError`.
"""

from __future__ import annotations

import json
import ssl
import zlib
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import httpx

from app.lti.egress import guarded_transport

DEFAULT_MAX_ANSWER_BYTES = 1024 * 1024
"""1 MiB: a page of 100 line items or results is about 50 KB, a JWKS or a token a few KB.
Every byte up to the cap is read and decoded in the event loop before a garbage answer is
refused, so the cap is also what one bad platform's retries cost everyone else (in
tests/reliability/test_poison_soak.py healthy delivery beside a platform answering garbage
ran at 0.78-0.83 of its rate alone with 4 MiB, 0.87-0.94 with 1 MiB)."""
_READ_ENCODINGS = "gzip, deflate"


class AnswerTooLarge(httpx.DecodingError):
    """A platform's answer passed the size cap; `status_code` is the answer's status."""

    def __init__(self, status_code: int, limit: int, request: httpx.Request) -> None:
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
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        try:
            if encoding not in ("identity", "gzip", "deflate"):
                raise httpx.DecodingError(f"unsupported content-encoding {encoding!r}")
            body = await self._read(response, request, encoding)
        except zlib.error as exc:
            raise httpx.DecodingError(f"the answer's {encoding} data is corrupt") from exc
        finally:
            await response.aclose()
        headers = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        headers.append(("content-length", str(len(body))))
        return httpx.Response(
            response.status_code,
            headers=headers,
            stream=httpx.ByteStream(body),
            extensions=response.extensions,
            request=request,
        )

    async def _read(self, response: httpx.Response, request: httpx.Request, encoding: str) -> bytes:
        declared = response.headers.get("content-length", "")
        if encoding == "identity" and declared.isdigit() and int(declared) > self._max_bytes:
            raise AnswerTooLarge(response.status_code, self._max_bytes, request)
        decoder = None if encoding == "identity" else _Decoder(encoding)
        parts: list[bytes] = []
        size = 0
        assert isinstance(response.stream, httpx.AsyncByteStream)
        async for chunk in response.stream:
            if decoder is not None:
                chunk = decoder.decode(chunk, self._max_bytes - size)
            size += len(chunk)
            if size > self._max_bytes:
                raise AnswerTooLarge(response.status_code, self._max_bytes, request)
            parts.append(chunk)
        return b"".join(parts)

    async def aclose(self) -> None:
        await self._inner.aclose()


def outbound_http_client(
    *,
    connect_timeout: float,
    read_timeout: float,
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    max_connections: int = 200,
    verify: ssl.SSLContext | bool = True,
    insecure_hosts: Iterable[str] = (),
) -> httpx.AsyncClient:
    """A client for calls to platforms: explicit timeouts and connection limits, no redirects,
    every answer capped at `max_answer_bytes`, and connections only to public addresses unless
    the host name is one of `insecure_hosts` (app/lti/egress).

    Pass `verify` (an SSL context) to share one certificate store between clients.
    """
    timeout = httpx.Timeout(
        connect=connect_timeout, read=read_timeout, write=read_timeout, pool=read_timeout
    )
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=100)
    transport = guarded_transport(insecure_hosts, verify=verify, limits=limits)
    return httpx.AsyncClient(
        timeout=timeout,
        follow_redirects=False,
        headers={"User-Agent": "passback", "Accept-Encoding": _READ_ENCODINGS},
        transport=CappedTransport(transport, max_answer_bytes),
    )


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
