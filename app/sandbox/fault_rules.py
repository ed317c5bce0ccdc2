"""What a fault is: the rule model shared by the config, the admin API and the fault plan."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator

FAULT_HEADER = "x-sandbox-fault"
PLATFORM_PATHS = r"^(/api/lti/courses/|/login/oauth2/token$)"
"""Default rule pattern: AGS and token requests (not the platform JWKS)."""


class FaultKind(StrEnum):
    LATENCY = "latency"
    ERROR = "error"
    TOO_MANY_REQUESTS = "too_many_requests"
    THROTTLE = "throttle"
    DROP = "drop"


class FaultPhase(StrEnum):
    BEFORE = "before"
    AFTER = "after"


class FaultRule(BaseModel):
    """One kind of misbehaviour, for requests whose path matches `path` (a regex, searched)."""

    kind: FaultKind
    path: str = PLATFORM_PATHS
    method: str | None = None
    host: str | None = None
    """Only requests addressed to this host (``127.0.0.1:8002``, as in the Host header): one
    of the Canvas hosts the sandbox plays misbehaves while the others do not."""
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    remaining: int | None = Field(default=None, ge=1)
    delay_ms: int = Field(default=0, ge=0)
    status: int = Field(default=500, ge=500, le=599)
    retry_after: int = Field(default=1, ge=0)
    phase: FaultPhase = FaultPhase.BEFORE

    @field_validator("path")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        re.compile(pattern)
        return pattern

    def matches(self, method: str, path: str, host: str | None = None) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.host is not None and self.host.lower() != (host or "").lower():
            return False
        return re.search(self.path, path) is not None


class FaultSettings(BaseModel):
    """Everything switchable per run: base latency, the rules, the RNG seed."""

    latency_ms: int = Field(default=0, ge=0)
    latency_path: str = PLATFORM_PATHS
    rules: list[FaultRule] = Field(default_factory=list)
    seed: int | None = None


def parse_fault_header(value: str) -> FaultRule:
    """``"error; status=503"`` → FaultRule(kind=error, status=503). Raises ValueError."""
    kind, *options = (part.strip() for part in value.split(";"))
    fields: dict[str, Any] = {"kind": kind, "path": ".*"}
    for option in options:
        if option:
            name, _, setting = option.partition("=")
            fields[name.strip()] = setting.strip()
    try:
        return FaultRule.model_validate(fields)
    except ValidationError as exc:
        raise ValueError(f"bad {FAULT_HEADER} header: {value!r}") from exc
