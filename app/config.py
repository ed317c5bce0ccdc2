"""One typed settings object, read once at start-up (environment, `PASSBACK_` prefix)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from app.lti.http import DEFAULT_MAX_ANSWER_BYTES

Scope = Literal["events", "passback", "admin"]
DEFAULT_VAR_DIR = Path("var")
ENV_PREFIX = "PASSBACK_"
KEY_ENCRYPTION_KEY_BYTES = 32
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DATABASE_BACKENDS = ("sqlite", "postgresql")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


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
        if self.sha256 is not None and not _HEX_DIGEST.fullmatch(self.sha256):
            raise ValueError(f"API key {self.name!r}: 'sha256' must be 64 hex digits")
        return self

    @property
    def digest(self) -> bytes:
        if self.key is not None:
            return hashlib.sha256(self.key.get_secret_value().encode()).digest()
        assert self.sha256 is not None
        return bytes.fromhex(self.sha256)


def decode_key_encryption_key(value: str) -> bytes:
    """32 bytes from base64 (standard or URL-safe alphabet, as `openssl rand -base64 32` or
    `Fernet.generate_key()` print them)."""
    text = value.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("must be base64 (e.g. `openssl rand -base64 32`)") from exc
    if len(raw) != KEY_ENCRYPTION_KEY_BYTES:
        raise ValueError(
            f"must be {KEY_ENCRYPTION_KEY_BYTES} bytes in base64, not {len(raw)} "
            "(e.g. `openssl rand -base64 32`)"
        )
    return raw


def _check_http_url(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    database_url: str = Field(
        default="",
        description="SQLAlchemy async URL (postgresql+asyncpg://… in production); "
        "default SQLite at var_dir/passback.db.",
    )
    database_pool_size: int = Field(default=10, ge=1)
    var_dir: Path = DEFAULT_VAR_DIR
    dev_mode: bool = Field(
        default=False,
        description="Development (scripts/start): with no API keys, make and print an "
        "every-scope key; with no key-encryption key, keep one in var_dir.",
    )

    api_keys: Annotated[list[ApiKeySetting], NoDecode] = Field(default_factory=list)

    teacher_token_secret: SecretStr | None = None
    teacher_token_jwks_url: str | None = None
    teacher_token_audience: str = "passback"

    tool_key_file: Path | None = Field(
        default=None,
        description="PEM of the current tool private key, managed by the operator (the "
        "database then holds no keys; an older PEM in tool_key_dir stays published).",
    )
    tool_key_dir: Path | None = Field(
        default=None,
        description="Folder of tool key PEMs from earlier releases (default var_dir/keys): "
        "imported into the database on first start.",
    )
    key_encryption_key: SecretStr | None = Field(
        default=None,
        description="Encrypts the tool's private keys in the database: 32 random bytes in "
        "base64. Required unless dev_mode or tool_key_file.",
    )
    tool_key_refresh_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often an instance re-reads the tool keys (a rotation elsewhere is "
        "signed with and published within this time).",
    )

    insecure_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts that may be reached over http and on loopback (development, tests).",
    )

    http_connect_timeout: float = Field(default=5.0, gt=0)
    http_read_timeout: float = Field(default=30.0, gt=0)
    http_max_answer_bytes: int = Field(
        default=DEFAULT_MAX_ANSWER_BYTES,
        ge=1024,
        description="Largest answer read from a platform (token, AGS, results, JWKS), in bytes "
        "once decompressed; a larger one is aborted and treated as an unusable answer.",
    )
    delivery_deadline_seconds: float = Field(default=24 * 3600, gt=0)
    worker_concurrency: int = Field(default=64, ge=1)
    worker_poll_interval: float = Field(default=0.5, gt=0)
    lease_seconds: float = Field(default=120.0, gt=0)
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
    max_body_bytes: int = Field(default=1_000_000, ge=1)
    body_read_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        description="A request body not received in full this long after its headers is "
        "answered 408 and its connection closed (slow clients).",
    )
    public_base_url: str | None = Field(
        default=None,
        description="Where the service is reached from outside: the JWKS URL given to "
        "platforms and the base of registration invites.",
    )
    tool_launch_url: str | None = Field(
        default=None,
        description="Formative's LTI launch URL: target_link_uri and redirect_uris in "
        "registrations and /lti/canvas.json.",
    )
    tool_login_url: str | None = Field(
        default=None,
        description="Formative's OIDC login initiation URL, for registrations.",
    )
    tool_name: str = Field(default="Formative", description="The tool's name in platforms.")
    log_json: bool = True
    log_level: str = "INFO"
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, GET /metrics wants `Authorization: Bearer <this token>`.",
    )
    retention_days: int = Field(
        default=180,
        ge=1,
        description="Finished jobs (delivered, superseded, failed) and submission events "
        "older than this are removed by `passback prune` (see app/store/retention.py).",
    )

    @model_validator(mode="after")
    def _default_database_in_var_dir(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.var_dir / 'passback.db'}"
        return self

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value:
            return value
        # The URL may hold a password: the message never repeats it.
        expected = "postgresql+asyncpg://user:password@host/database or sqlite+aiosqlite:///path"
        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError as exc:
            raise ValueError(f"not a database URL (expected {expected})") from exc
        if backend not in DATABASE_BACKENDS:
            raise ValueError(f"unsupported database (expected {expected})")
        return value

    @field_validator(
        "teacher_token_jwks_url", "public_base_url", "tool_launch_url", "tool_login_url"
    )
    @classmethod
    def _check_urls(cls, value: str | None) -> str | None:
        return _check_http_url(value)

    @field_validator("key_encryption_key")
    @classmethod
    def _check_key_encryption_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        decode_key_encryption_key(value.get_secret_value())
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else []
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list of keys ({exc})") from exc
        return value

    @field_validator("insecure_hosts", mode="before")
    @classmethod
    def _parse_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [host.strip() for host in value.split(",") if host.strip()]
        return value

    @property
    def keys_dir(self) -> Path:
        return self.tool_key_dir or self.var_dir / "keys"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def refusal_to_serve(self) -> str | None:
        """Why `passback serve` must not start with these settings (one line), or None."""
        if not self.api_keys and not self.dev_mode:
            return (
                f"{ENV_PREFIX}API_KEYS is empty: configure at least one API key "
                f"({ENV_PREFIX}DEV_MODE=true makes a development key instead)"
            )
        return self.refusal_to_sign()

    def refusal_to_sign(self) -> str | None:
        """Why this instance could not sign client assertions (one line), or None."""
        if self.tool_key_file is not None:
            if not self.tool_key_file.is_file():
                return f"{ENV_PREFIX}TOOL_KEY_FILE: no such file {self.tool_key_file}"
            return None
        if self.key_encryption_key is None and not self.dev_mode:
            return (
                f"{ENV_PREFIX}KEY_ENCRYPTION_KEY is not set: it encrypts the tool's signing "
                "keys in the database (32 random bytes in base64: `openssl rand -base64 32`)"
            )
        return None


def describe_settings_error(error: ValidationError) -> str:
    """One line naming each setting that cannot work, e.g.
    `PASSBACK_API_KEYS: API key 'ci': 'sha256' must be 64 hex digits`."""
    problems = []
    for detail in error.errors(include_url=False, include_input=False):
        field = str(detail["loc"][0]) if detail["loc"] else "settings"
        message = str(detail["msg"]).removeprefix("Value error, ")
        problems.append(f"{ENV_PREFIX}{field.upper()}: {message}")
    return "invalid setting " + "; ".join(dict.fromkeys(problems))
