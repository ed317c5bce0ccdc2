"""Installing the tool into a platform: registration invites and LTI Dynamic Registration.

An operator makes an invite (`passback platforms invite`): a short-lived, single-use link to
`/lti/registration?invite=…` that a platform admin pastes into the platform. The platform
opens it with `openid_configuration` and `registration_token`; `install_from_invite` claims
the invite, registers the tool with the platform (app.lti.registration) and records the new
platform registration through the same rules as `POST /v1/platforms` (app.registry).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

import httpx
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import utc_now
from app.config import Settings
from app.lti.registration import (
    DynamicRegistrationError,
    PlatformConfiguration,
    RegisteredClient,
    fetch_platform_configuration,
    register_tool,
)
from app.lti.tool import ToolDescription, registration_request
from app.registry import PlatformCreate, RegistryError, register_platform
from app.store import invites as store
from app.store.db import create_engine, create_session_factory
from app.store.models import Platform

REGISTRATION_PATH = "/lti/registration"
JWKS_PATH = "/.well-known/jwks.json"
INVITE_PARAM = "invite"
DEFAULT_INVITE_TTL = timedelta(hours=24)
MAX_INVITE_TTL = timedelta(days=30)
MAX_PARAM_CHARS = 4096
TOOL_DESCRIPTION = (
    "Formative assessments; scores pass back to the gradebook through LTI Advantage (AGS)."
)


class InstallError(Exception):
    """A registration refused or failed: `status` and `code` for the page, `message` says
    what happened and `remedy` what the person should do."""

    def __init__(self, status: int, code: str, message: str, remedy: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.remedy = remedy


class NotConfiguredError(Exception):
    """Settings a registration needs are missing (names them)."""


@dataclass(frozen=True)
class Installed:
    platform: Platform
    configuration: PlatformConfiguration
    client: RegisteredClient


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tool_description(settings: Settings) -> ToolDescription:
    """The tool as platforms see it, from settings; raises NotConfiguredError naming what is
    missing."""
    missing = [
        f"PASSBACK_{name.upper()}"
        for name in ("public_base_url", "tool_launch_url", "tool_login_url")
        if not getattr(settings, name)
    ]
    if missing:
        raise NotConfiguredError(f"set {', '.join(missing)}")
    assert settings.public_base_url and settings.tool_launch_url and settings.tool_login_url
    return ToolDescription(
        name=settings.tool_name,
        description=TOOL_DESCRIPTION,
        launch_url=settings.tool_launch_url,
        login_url=settings.tool_login_url,
        jwks_url=settings.public_base_url.rstrip("/") + JWKS_PATH,
    )


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`90`, `90s`, `30m`, `2h`, `7d` → a timedelta (ValueError otherwise)."""
    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in _DURATION_UNITS else "s"
    number = value[:-1] if value[-1:] in _DURATION_UNITS else value
    if not number.isdigit():
        raise ValueError(f"{text!r} is not a duration (e.g. 3600, 30m, 24h, 7d)")
    return timedelta(seconds=int(number) * _DURATION_UNITS[unit])


def invite_url(public_base_url: str, token: str) -> str:
    return f"{public_base_url.rstrip('/')}{REGISTRATION_PATH}?{urlencode({INVITE_PARAM: token})}"


async def create_invite(
    session: AsyncSession, *, label: str, ttl: timedelta, now: datetime
) -> tuple[str, datetime]:
    """A new invite (committed); returns its secret (never stored) and expiry."""
    if not timedelta(0) < ttl <= MAX_INVITE_TTL:
        raise ValueError(f"the invite's lifetime must be above 0 and at most {MAX_INVITE_TTL}")
    if len(label) > 255:
        raise ValueError("the label is longer than 255 characters")
    token = secrets.token_urlsafe(32)
    expires_at = now + ttl
    await store.add_invite(
        session, token_sha256=token_digest(token), label=label, now=now, expires_at=expires_at
    )
    return token, expires_at


async def create_invite_from_cli(
    settings: Settings, *, label: str, ttl: timedelta
) -> tuple[str, datetime]:
    """The invite link to hand to a platform admin, and when it expires."""
    if not settings.public_base_url:
        raise NotConfiguredError(
            "set PASSBACK_PUBLIC_BASE_URL (where platforms reach this service)"
        )
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with create_session_factory(engine)() as session:
            token, expires_at = await create_invite(session, label=label, ttl=ttl, now=utc_now())
    finally:
        await engine.dispose()
    return invite_url(settings.public_base_url, token), expires_at


_INVITE_REMEDY = "Ask the operator of passback for a new link (passback platforms invite)."
_REFUSALS = {
    store.ClaimRefusal.unknown: (404, "this registration link is not valid"),
    store.ClaimRefusal.expired: (410, "this registration link has expired"),
    store.ClaimRefusal.used: (410, "this registration link was already used"),
}


def _refused(refusal: store.ClaimRefusal) -> InstallError:
    status, message = _REFUSALS[refusal]
    return InstallError(status, refusal.value, message, _INVITE_REMEDY)


async def check_invite(
    sessions: async_sessionmaker[AsyncSession], invite_token: str, now: datetime
) -> datetime:
    """The invite's expiry if it can still start a registration; else raises InstallError."""
    async with sessions() as session:
        invite = await store.find_invite(session, token_digest(invite_token))
        refusal = store.refusal_of(invite, now)
    if refusal is not None:
        raise _refused(refusal)
    assert invite is not None
    return invite.expires_at


def _failed(exc: DynamicRegistrationError) -> InstallError:
    remedies = {
        "issuer_mismatch": "Start the registration from the platform itself; if it is yours, "
        "its OpenID configuration must name the issuer at the address it is served from.",
        "platform_refused_registration": "Check the platform's message above, then start "
        "Dynamic Registration again with the same link.",
        "platform_url_refused": "The platform's addresses must be public https URLs. Ask the "
        "operator of passback if this platform is on a private network.",
    }
    remedy = remedies.get(
        exc.code,
        "Try again with the same link; if it keeps failing, send this page to the "
        "operator of passback.",
    )
    return InstallError(502, exc.code, str(exc), remedy)


def _platform_body(
    configuration: PlatformConfiguration, client: RegisteredClient, label: str
) -> PlatformCreate:
    if client.deployment_id is None:
        raise InstallError(
            502,
            "deployment_not_reported",
            f"the platform made client_id {client.client_id!r} but named no deployment",
            "Install the tool in an account or course, then have the operator register it with "
            f"passback platforms add --client-id {client.client_id} and the deployment id.",
        )
    name = label or configuration.account_name or configuration.issuer
    try:
        return PlatformCreate.model_validate(
            {
                "issuer": configuration.issuer,
                "client_id": client.client_id,
                "deployment_ids": [client.deployment_id],
                "token_url": configuration.token_endpoint,
                "jwks_url": configuration.jwks_uri,
                "allowed_hosts": configuration.allowed_hosts(),
                "label": name[:255],
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InstallError(
            502,
            "platform_answer_invalid",
            f"the platform's registration cannot be recorded ({where}: {first['msg']})",
            "Send this page to the operator of passback.",
        ) from exc


async def install_from_invite(
    sessions: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    *,
    tool: ToolDescription,
    invite_token: str,
    openid_configuration: str,
    registration_token: str | None,
    insecure_hosts: Iterable[str],
    now: datetime,
) -> Installed:
    """Run Dynamic Registration for one claimed invite and record the platform (committed).

    The invite is used once a platform is recorded; a registration that fails before that
    leaves it usable again (until it expires). Raises InstallError.
    """
    async with sessions() as session:
        claimed = await store.claim_invite(session, token_digest(invite_token), now)
    if isinstance(claimed, store.ClaimRefusal):
        raise _refused(claimed)
    invite_id, label = claimed.id, claimed.label
    try:
        installed = await _register(
            sessions,
            http,
            tool=tool,
            label=label,
            openid_configuration=openid_configuration,
            registration_token=registration_token,
            insecure_hosts=list(insecure_hosts),
            now=now,
        )
    except Exception:
        async with sessions() as session:
            await store.release_invite(session, invite_id)
        raise
    async with sessions() as session:
        await store.complete_invite(session, invite_id, installed.platform.id)
    return installed


async def _register(
    sessions: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    *,
    tool: ToolDescription,
    label: str,
    openid_configuration: str,
    registration_token: str | None,
    insecure_hosts: list[str],
    now: datetime,
) -> Installed:
    try:
        configuration = await fetch_platform_configuration(
            http, openid_configuration, registration_token, insecure_hosts=insecure_hosts
        )
        body = registration_request(tool, platform_is_canvas=configuration.is_canvas)
        client = await register_tool(
            http, configuration, registration_token, body, insecure_hosts=insecure_hosts
        )
    except DynamicRegistrationError as exc:
        raise _failed(exc) from exc
    platform_body = _platform_body(configuration, client, label)
    async with sessions() as session:
        try:
            platform = await register_platform(
                session, platform_body, insecure_hosts=insecure_hosts, now=now
            )
        except RegistryError as exc:
            raise InstallError(
                exc.status if exc.status == 409 else 502,
                exc.code,
                str(exc),
                "The platform's registration exists already: ask the operator of passback to "
                "check it (passback platforms list)."
                if exc.status == 409
                else "Send this page to the operator of passback.",
            ) from exc
    return Installed(platform=platform, configuration=configuration, client=client)
