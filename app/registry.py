"""Platform registrations: validation and the create/change rules, shared by the API and the CLI."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import utc_now
from app.config import Settings
from app.lti.urls import (
    UnsafeUrlError,
    check_host_pattern,
    check_url_shape,
    host_of,
    normalize_host_pattern,
    without_credentials,
)
from app.store import platforms as store
from app.store.db import create_engine, create_session_factory
from app.store.models import Platform


class RegistryError(Exception):
    """A registration the rules refuse; `status` and `code` become the API's problem answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


NonEmpty = Annotated[str, Field(min_length=1, max_length=512)]
UrlText = Annotated[str, Field(min_length=1, max_length=2048)]
HostPattern = Annotated[
    str,
    Field(min_length=1, max_length=260, examples=["*.instructure.com"]),
    AfterValidator(normalize_host_pattern),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PlatformCreate(_Strict):
    issuer: NonEmpty = Field(examples=["https://canvas.instructure.com"])
    client_id: NonEmpty = Field(examples=["10000000000042"])
    deployment_ids: list[NonEmpty] = Field(min_length=1, examples=[["1:abc"]])
    token_url: UrlText = Field(examples=["https://school.instructure.com/login/oauth2/token"])
    token_audience: UrlText | None = Field(
        default=None, description="The `aud` of client assertions; defaults to `token_url`."
    )
    jwks_url: UrlText = Field(
        description="The platform's public keys, to verify launches.",
        examples=["https://sso.canvaslms.com/api/lti/security/jwks"],
    )
    allowed_hosts: list[HostPattern] | None = Field(
        default=None,
        description="Host patterns AGS and token URLs may use (`*.instructure.com`); "
        "defaults to the token URL's host.",
    )
    label: str = Field(default="", max_length=255)


class PlatformUpdate(_Strict):
    deployment_ids: list[NonEmpty] | None = Field(default=None, min_length=1)
    token_url: UrlText | None = None
    token_audience: UrlText | None = None
    jwks_url: UrlText | None = None
    allowed_hosts: list[HostPattern] | None = Field(default=None, min_length=1)
    label: str | None = Field(default=None, max_length=255)
    active: bool | None = None


class PlatformOut(BaseModel):
    id: str
    issuer: str
    client_id: str
    deployment_ids: list[str]
    token_url: str
    token_audience: str
    jwks_url: str
    allowed_hosts: list[str]
    label: str
    active: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, platform: Platform) -> PlatformOut:
        return cls(
            id=platform.id,
            issuer=platform.issuer,
            client_id=platform.client_id,
            deployment_ids=list(platform.deployment_ids),
            # (URLs with credentials are refused; any stored before are shown without them)
            token_url=without_credentials(platform.token_url),
            token_audience=without_credentials(platform.audience),
            jwks_url=without_credentials(platform.jwks_url),
            allowed_hosts=list(platform.allowed_hosts),
            label=platform.label,
            active=platform.active,
            created_at=platform.created_at,
            updated_at=platform.updated_at,
        )


def _check_urls(platform: Platform, insecure_hosts: Iterable[str]) -> None:
    """The registration sends tokens and grades only where it should: https URLs without
    credentials, hosts that are not internal (unless insecure hosts allow them), and no
    allowed-host pattern as wide as a top-level domain."""
    try:
        for url in (platform.token_url, platform.jwks_url, platform.audience):
            check_url_shape(url, insecure_hosts=insecure_hosts)
        for pattern in platform.allowed_hosts:
            check_host_pattern(pattern, insecure_hosts=insecure_hosts)
    except UnsafeUrlError as exc:
        raise RegistryError(422, exc.code, str(exc)) from exc


def _default_hosts(token_url: str) -> list[str]:
    try:
        return [host_of(token_url)]
    except ValueError:  # (an invalid port: the token URL's own check says so)
        return []


def _duplicate(issuer: str, client_id: str) -> RegistryError:
    return RegistryError(
        409,
        "platform_exists",
        f"a platform with issuer {issuer!r} and client_id {client_id!r} is already registered",
    )


async def register_platform(
    session: AsyncSession, body: PlatformCreate, *, insecure_hosts: Iterable[str], now: datetime
) -> Platform:
    """Validate and store a new registration (committed on return)."""
    fields = body.model_dump()
    fields["allowed_hosts"] = body.allowed_hosts or _default_hosts(body.token_url)
    platform = store.new_platform(now, **fields)
    _check_urls(platform, insecure_hosts)
    if await store.find_platform(session, body.issuer, body.client_id) is not None:
        raise _duplicate(body.issuer, body.client_id)
    session.add(platform)
    try:
        await session.commit()
    except IntegrityError as exc:
        raise _duplicate(body.issuer, body.client_id) from exc
    return platform


async def update_platform(
    session: AsyncSession,
    platform: Platform,
    body: PlatformUpdate,
    *,
    insecure_hosts: Iterable[str],
    now: datetime,
) -> Platform:
    for name, value in body.model_dump(exclude_unset=True).items():
        if value is None and name != "token_audience":
            raise RegistryError(422, "validation_error", f"{name} may not be null")
        setattr(platform, name, value)
    _check_urls(platform, insecure_hosts)
    platform.updated_at = now
    await session.commit()
    return platform


async def register_platform_from_cli(settings: Settings, body: dict[str, Any]) -> dict[str, Any]:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with create_session_factory(engine)() as session:
            validated = PlatformCreate.model_validate(body)
            try:
                platform = await register_platform(
                    session, validated, insecure_hosts=settings.insecure_hosts, now=utc_now()
                )
            except RegistryError as exc:
                raise ValueError(str(exc)) from exc
            return PlatformOut.of(platform).model_dump(mode="json")
    finally:
        await engine.dispose()


async def list_platforms_from_cli(settings: Settings) -> list[dict[str, Any]]:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with create_session_factory(engine)() as session:
            platforms = await store.list_platforms(session)
            return [PlatformOut.of(platform).model_dump(mode="json") for platform in platforms]
    finally:
        await engine.dispose()
