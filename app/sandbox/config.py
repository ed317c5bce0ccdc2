"""The sandbox's settings: where it lives, Canvas's feature flags, the throttle's numbers.

`SandboxConfig` is read once by `create_sandbox_app`. The throttle numbers and the flags are
copied into the running state, where the admin API can change them; a reset restores them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from app.sandbox.fault_rules import FaultSettings

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware UTC. Tests pass a controllable one."""

DEFAULT_ISSUER = "https://canvas.instructure.com"
DEFAULT_CLUSTER = "cluster1"
"""The database cluster of a host the config does not map (a one-host sandbox's only one)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ThrottleSettings:
    """Canvas's leaky bucket (canvas-ags.md §7). Defaults are Canvas's own Settings.

    `request_cost` stands in for the CPU + database seconds Canvas charges per request;
    `token_extra_cost` is the extra charge of each token grant.
    """

    enabled: bool = True
    high_water: float = 600.0
    maximum: float = 800.0
    leak_per_second: float = 10.0
    up_front_cost: float = 50.0
    request_cost: float = 0.1
    token_extra_cost: float = 200.0


@dataclass
class CanvasFlags:
    """Canvas feature flags and Settings that change observable AGS behaviour."""

    improved_concluded_response_codes: bool = True
    """`ags_improved_course_concluded_response_codes`: concluded course → 422 (on) or 404 (off)."""
    enforce_iso8601_for_lti_scores: bool = False
    """Setting `enforce_iso8601_for_lti_scores`: off accepts lenient timestamps too."""
    remove_top_submitted_at: bool = False
    """`lti_ags_remove_top_submitted_at`: on ignores a top-level `submittedAt`."""
    whole_second_timestamps: bool = False
    """Not Canvas's: behave like Moodle, which keeps a score's timestamp in whole seconds and
    answers 409 to a score whose timestamp is not later than the stored one (equal included)."""


@dataclass
class SandboxConfig:
    """How to build a sandbox platform.

    `base_url` is the sandbox's public root (e.g. ``http://127.0.0.1:8001``). It names the
    platform in launches made without a request and is the default `issuer`. URLs in AGS
    answers (line item ids, resultUrl, Link) always follow the host of the request itself.
    """

    base_url: str | None = None
    issuer: str | None = None
    clock: Clock = utc_now
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    flags: CanvasFlags = field(default_factory=CanvasFlags)
    faults: FaultSettings = field(default_factory=FaultSettings)
    """Faults of every run (e.g. ``FaultSettings(latency_ms=100)`` for benchmarks)."""
    fault_seed: int = 0
    request_log_limit: int = 10_000
    jwks_fetch_timeout_seconds: float = 5.0
    platform_key_pem: bytes | None = None
    """PEM of the platform's RSA signing key; generated when absent."""
    universal_token_hosts: tuple[str, ...] = ("canvas.instructure.com", "sso.canvaslms.com")
    clusters: dict[int, str] = field(default_factory=dict)
    """The Canvas hosts this sandbox plays: the 127.0.0.1 port each is served on → its
    database cluster id. Canvas buckets AGS calls per developer key *and cluster*
    (canvas-ags.md §7); a port not named here is on `DEFAULT_CLUSTER`. Every host serves the
    same world and accepts the tokens of the one token endpoint."""
    access_token_lifetime_seconds: int = 3600

    @property
    def effective_issuer(self) -> str:
        if self.issuer:
            return self.issuer
        if self.base_url:
            return self.base_url.rstrip("/")
        return DEFAULT_ISSUER
