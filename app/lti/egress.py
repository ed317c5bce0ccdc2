"""The SSRF guard at connection time: the address a call actually connects to is checked.

Checking a URL's host name is not enough: a name on an allowed host pattern may resolve to
127.0.0.1 or 169.254.169.254 (or start to, between the check and the call). The httpx clients
(tokens, JWKS, registration) connect through `GuardedNetworkBackend`: it resolves the name
itself, refuses when any address is internal (`is_public_address`) unless the *name* is
one of the insecure hosts, and connects to the checked address. TLS still verifies the
certificate and sends SNI for the name (httpcore starts TLS with the URL's host), and
connections are pooled per origin as before.

The AGS calls (app.lti.http.PlatformHttp, on aiohttp) connect through `GuardedResolver`, the
same check as aiohttp's resolver: aiohttp connects to the addresses it returns, with TLS
verifying the name. aiohttp does not ask a resolver about an address literal, so
`refuse_internal_literal` checks those before the call.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import typing
from collections.abc import Iterable

import httpcore
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult

from app.lti.urls import IpAddress, is_public_address


class BlockedAddressError(httpcore.ConnectError):
    """The host resolves to an address the service must not call (seen by callers as an
    `httpx.ConnectError` whose message says so)."""


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, insecure_hosts: Iterable[str]) -> None:
        self._insecure_hosts = frozenset(host.lower() for host in insecure_hosts)
        self._network = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if host.lower() in self._insecure_hosts:
            addresses = [host]
        else:
            addresses = [str(address) for address in await self._public_addresses(host, timeout)]
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self._network.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last_error = error
        assert last_error is not None
        raise last_error

    async def _public_addresses(self, host: str, within: float | None) -> list[IpAddress]:
        try:
            literal: IpAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(within):
                    found = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            except TimeoutError as exc:
                raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
            except OSError as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
            addresses = list(dict.fromkeys(_address(entry[4][0]) for entry in found))
        _refuse_internal(host, addresses)
        return addresses

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for outbound calls")

    async def sleep(self, seconds: float) -> None:
        await self._network.sleep(seconds)


def _address(sockaddr_host: str | int) -> IpAddress:
    return ipaddress.ip_address(str(sockaddr_host).split("%", 1)[0])


def _refuse_internal(host: str, addresses: list[IpAddress]) -> None:
    internal = [address for address in addresses if not is_public_address(address)]
    if internal or not addresses:
        raise BlockedAddressError(
            f"{host} resolves to an internal address ({internal[0] if internal else 'none'}); "
            "only hosts in PASSBACK_INSECURE_HOSTS may be"
        )


class ResolveTimeout(TimeoutError):
    """Resolving a host name took longer than the connect timeout."""


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver with the guard: the addresses of a name, refused (BlockedAddressError)
    when any is internal, unless the name is one of the insecure hosts."""

    def __init__(self, insecure_hosts: Iterable[str], *, within: float | None) -> None:
        self._insecure_hosts = frozenset(host.lower() for host in insecure_hosts)
        self._within = within

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._within):
                found = await loop.getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, family=family, flags=socket.AI_ADDRCONFIG
                )
        except TimeoutError as exc:
            raise ResolveTimeout(f"resolving {host} timed out") from exc
        if host.lower() not in self._insecure_hosts:
            _refuse_internal(host, [_address(entry[4][0]) for entry in found])
        return [
            ResolveResult(
                hostname=host,
                host=str(sockaddr[0]),
                port=int(sockaddr[1]),
                family=entry_family,
                proto=proto,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for entry_family, _, proto, _, sockaddr in found
        ]

    async def close(self) -> None:
        return None


def refuse_internal_literal(host: str, insecure_hosts: frozenset[str]) -> None:
    """An address literal that is internal, unless an insecure host: BlockedAddressError.
    (A name is checked by `GuardedResolver` when connecting.)"""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return
    if host.lower() not in insecure_hosts:
        _refuse_internal(host, [literal])


def guarded_transport(
    insecure_hosts: Iterable[str], *, verify: typing.Any, limits: httpx.Limits
) -> httpx.AsyncHTTPTransport:
    """httpx's transport with its connection pool connecting through the guard."""
    transport = httpx.AsyncHTTPTransport(verify=verify, limits=limits)
    old_pool = transport._pool
    # httpx builds its pool without a way to pass a network backend; the same pool, built
    # with one (tests/security/test_ssrf.py fails if an httpx upgrade changes this).
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=old_pool._ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=GuardedNetworkBackend(insecure_hosts),
    )
    return transport
