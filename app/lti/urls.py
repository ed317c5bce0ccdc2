"""Outbound URL rules (SSRF guard) and AGS URL helpers.

Tokens and scores go only to https URLs whose host matches one of the registration's allowed
host patterns. Plain http, and loopback, are allowed only for hosts named in the
`insecure_hosts` setting (development and tests).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit, urlunsplit

HOST_PATTERN = re.compile(
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*(:\d{1,5})?$"
)


class UnsafeUrlError(ValueError):
    """A URL the service refuses to call; `code` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def normalize_host_pattern(pattern: str) -> str:
    """Lower-case and check a host pattern: `canvas.example.edu`, `*.instructure.com`, `h:8443`."""
    candidate = pattern.strip().lower()
    if not HOST_PATTERN.match(candidate):
        raise ValueError(
            f"{pattern!r} is not a host pattern (e.g. canvas.example.edu, *.example.edu)"
        )
    return candidate


def _authority(parts: SplitResult) -> tuple[str, str]:
    host = (parts.hostname or "").lower()
    default_port = 443 if parts.scheme == "https" else 80
    port = parts.port or default_port
    return host, f"{host}:{port}"


def host_matches(url: str, patterns: Iterable[str]) -> bool:
    parts = urlsplit(url)
    host, host_and_port = _authority(parts)
    for pattern in patterns:
        if pattern.startswith("*."):
            bare = pattern[2:]
            target = host_and_port if ":" in bare else host
            if target.endswith("." + bare):
                return True
        elif pattern in (host, host_and_port):
            return True
    return False


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public_address(address: IpAddress) -> bool:
    """An address on the public internet: not loopback, private, link-local, unspecified,
    multicast, reserved, shared (100.64/10) or documentation, also when IPv4-mapped."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _literal_address(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def host_refusal(host: str, *, insecure_hosts: Iterable[str]) -> UnsafeUrlError | None:
    """Why the service must not call `host` (a name or address literal), or None.

    Refused: `localhost` and the internal addresses `is_public_address` rules out, and names
    a resolver could read as an address (`2130706433`, `0x7f000001`, `127.1`: a last label
    starting with a digit); unless the host is one of `insecure_hosts`. A name's addresses
    are checked again when connecting (app/lti/egress.py)."""
    host = host.lower().rstrip(".")
    if host in {h.lower() for h in insecure_hosts}:
        return None
    address = _literal_address(host)
    if address is not None:
        if is_public_address(address):
            return None
        return UnsafeUrlError("private_address", f"{host} is a loopback or internal address")
    if host == "localhost" or host.endswith(".localhost"):
        return UnsafeUrlError("private_address", f"{host} is a loopback name")
    last_label = host.rsplit(".", 1)[-1]
    if not last_label or last_label[0].isdigit():
        return UnsafeUrlError(
            "invalid_host", f"{host} is neither a domain name nor a plain IP address"
        )
    return None


def check_host_pattern(pattern: str, *, insecure_hosts: Iterable[str]) -> None:
    """Refuse an allowed-host pattern (already normalized) that would let grades and tokens
    go to internal addresses, or to a whole top-level domain (`*.com`)."""
    host = pattern.removeprefix("*.").rsplit(":", 1)[0]
    if pattern.startswith("*.") and "." not in host:
        raise UnsafeUrlError(
            "wildcard_too_broad", f"{pattern!r} would allow every host of a top-level domain"
        )
    refusal = host_refusal(host, insecure_hosts=insecure_hosts)
    if refusal is not None:
        raise UnsafeUrlError(refusal.code, f"allowed host {pattern!r} is refused: {refusal}")


def _split(url: str) -> SplitResult:
    """`urlsplit`, with an out-of-range port refused (urlsplit raises on reading it)."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  (read to check it)
    except ValueError as exc:
        raise UnsafeUrlError("invalid_url", f"{url!r} has an invalid port") from exc
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UnsafeUrlError("invalid_url", f"{url!r} is not an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrlError(
            "credentials_in_url", "the URL carries a user name or password; give it without"
        )
    return parts


def check_outbound_url(
    url: str, *, allowed_hosts: Iterable[str], insecure_hosts: Iterable[str]
) -> None:
    """Raise UnsafeUrlError unless the service may send credentials to `url`."""
    parts = _split(url)
    host = (parts.hostname or "").lower()
    insecure_allowed = host in {h.lower() for h in insecure_hosts}
    if parts.scheme == "http" and not insecure_allowed:
        raise UnsafeUrlError("insecure_url", f"{url!r} is not https")
    refusal = host_refusal(host, insecure_hosts=insecure_hosts)
    if refusal is not None:
        raise UnsafeUrlError(refusal.code, f"{url!r} is refused: {refusal}")
    if not host_matches(url, allowed_hosts):
        raise UnsafeUrlError(
            "host_not_allowed", f"the host of {url!r} is not among the registration's allowed hosts"
        )


def check_url_shape(url: str, *, insecure_hosts: Iterable[str]) -> str:
    """Validate a configured URL: https (or http on an insecure host), no credentials, not
    on an internal address; returns it unchanged."""
    parts = _split(url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "http" and host not in {h.lower() for h in insecure_hosts}:
        raise UnsafeUrlError("insecure_url", f"{url!r} must use https")
    refusal = host_refusal(host, insecure_hosts=insecure_hosts)
    if refusal is not None:
        raise UnsafeUrlError(refusal.code, f"{url!r} is refused: {refusal}")
    return url


def without_credentials(url: str) -> str:
    """`url` with any `user:password@` taken out (for showing a stored URL)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def host_of(url: str) -> str:
    """`host` or `host:port` (when the port is not the scheme's default) of a URL."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.port and parts.port != (443 if parts.scheme == "https" else 80):
        return f"{host}:{parts.port}"
    return host


def service_url(lineitem_url: str, service: str) -> str:
    """`{lineitem}/scores` (or `/results`) with the path suffix before any query string."""
    parts = urlsplit(lineitem_url)
    path = parts.path.rstrip("/") + "/" + service
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))
