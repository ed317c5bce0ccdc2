"""One typed settings object, read once at start-up (environment, `PASSBACK_` prefix)."""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Scope = Literal["events", "passback", "admin"]
DEFAULT_VAR_DIR = Path("var")


class ApiKeySetting(BaseModel):
    """An API key as configured: the key itself, or its SHA-256 hex digest."""

    name: str
    key: SecretStr | None = None
    sha256: str | None = None
    scopes: list[Scope]

    @model_validator(mode="after")
    def _one_of_key_or_digest(self) -> ApiKeySetting:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError(f"API key {self.name!r}: give exactly one of 'key' or 'sha256'")
        if self.sha256 is not None and len(self.sha256) != 64:
            raise ValueError(f"API key {self.name!r}: 'sha256' must be 64 hex characters")
        return self

    @property
    def digest(self) -> bytes:
        if self.key is not None:
            return hashlib.sha256(self.key.get_secret_value().encode()).digest()
        assert self.sha256 is not None
        return bytes.fromhex(self.sha256)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PASSBACK_", extra="ignore")

    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{DEFAULT_VAR_DIR / 'passback.db'}",
        description="SQLAlchemy async URL (postgresql+asyncpg://… in production).",
    )
    database_pool_size: int = 10
    var_dir: Path = DEFAULT_VAR_DIR

    api_keys: Annotated[list[ApiKeySetting], NoDecode] = Field(default_factory=list)

    teacher_token_secret: SecretStr | None = None
    teacher_token_jwks_url: str | None = None
    teacher_token_audience: str = "passback"

    tool_key_file: Path | None = Field(
        default=None, description="PEM of the current tool private key; generated when absent."
    )
    tool_key_dir: Path | None = Field(
        default=None, description="Folder of tool keys (current and previous); default var/keys."
    )

    insecure_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts that may be reached over http and on loopback (development, tests).",
    )

    http_connect_timeout: float = 5.0
    http_read_timeout: float = 30.0
    http_max_answer_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest answer read from a platform (token, AGS, results, JWKS), in bytes "
        "once decompressed; a larger one is aborted and treated as an unusable answer.",
    )
    delivery_deadline_seconds: float = 24 * 3600
    worker_concurrency: int = 64
    worker_poll_interval: float = 0.5
    lease_seconds: float = 120.0
    run_workers: bool = True

    intake_max_batch: int = Field(
        default=128,
        ge=1,
        description="Most submission events written by one database statement (they are "
        "batched only when they arrive faster than they are written).",
    )
    intake_batches_in_flight: int = Field(
        default=2,
        ge=1,
        description="Event batches written at once on PostgreSQL (SQLite writes one at a time).",
    )
    intake_overlap_from: int = Field(
        default=12,
        ge=1,
        description="Events that must be waiting for a batch to start beside one already "
        "being written (with none running, one starts at once). Small overlapping batches "
        "cost more CPU per event than they save; see bench.ingest.",
    )
    max_body_bytes: int = 1_000_000
    public_base_url: str | None = None
    log_json: bool = True
    log_level: str = "INFO"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else []
        return value

    @field_validator("insecure_hosts", mode="before")
    @classmethod
    def _parse_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [host.strip() for host in value.split(",") if host.strip()]
        return value

    @cached_property
    def keys_dir(self) -> Path:
        return self.tool_key_dir or self.var_dir / "keys"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
