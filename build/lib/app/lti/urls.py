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


def _is_loopback_or_private(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def check_outbound_url(
    url: str, *, allowed_hosts: Iterable[str], insecure_hosts: Iterable[str]
) -> None:
    """Raise UnsafeUrlError unless the service may send credentials to `url`."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UnsafeUrlError("invalid_url", f"{url!r} is not an absolute http(s) URL")
    host = parts.hostname.lower()
    insecure_allowed = host in {h.lower() for h in insecure_hosts}
    if parts.scheme == "http" and not insecure_allowed:
        raise UnsafeUrlError("insecure_url", f"{url!r} is not https")
    if _is_loopback_or_private(host) and not insecure_allowed:
        raise UnsafeUrlError("private_address", f"{url!r} points at a loopback or private address")
    if not host_matches(url, allowed_hosts):
        raise UnsafeUrlError(
            "host_not_allowed", f"the host of {url!r} is not among the registration's allowed hosts"
        )


def check_url_shape(url: str, *, insecure_hosts: Iterable[str]) -> str:
    """Validate a configured URL (https, or http on an insecure host); returns it unchanged."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UnsafeUrlError("invalid_url", f"{url!r} is not an absolute http(s) URL")
    if parts.scheme == "http" and parts.hostname.lower() not in {h.lower() for h in insecure_hosts}:
        raise UnsafeUrlError("insecure_url", f"{url!r} must use https")
    return url


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
