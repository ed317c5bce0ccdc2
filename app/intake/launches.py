"""Launch intake: verify a student's Canvas launch and keep where their grade goes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.grading.reasons import ReasonCode, reason
from app.intake.schemas import FormativeId, ReasonOut
from app.lti.jwks import JwksCache
from app.lti.launch import (
    LEEWAY_SECONDS,
    LaunchClaims,
    LaunchRejectedError,
    LaunchRejection,
    Registration,
    can_post_scores,
    read_address,
    verify_launch,
)
from app.lti.urls import UnsafeUrlError, check_outbound_url
from app.store.launches import LaunchBinding, bind_id_token, save_launch
from app.store.models import Launch, Platform
from app.store.platforms import find_platforms_by_issuer

MAX_ID_TOKEN_LENGTH = 65_536


class LaunchIn(BaseModel):
    """A student's launch from Canvas into a formative, as Formative received it."""

    model_config = ConfigDict(extra="forbid")

    id_token: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_TOKEN_LENGTH)] = Field(
        description="The LTI 1.3 id_token the platform posted to Formative, unchanged."
    )
    formative_id: FormativeId
    student_id: FormativeId
    class_id: FormativeId


class LaunchOut(BaseModel):
    """The kept binding: where this student's grade for this formative goes."""

    id: str
    formative_id: str
    student_id: str
    class_id: str
    platform_id: str
    deployment_id: str
    lti_user_id: str = Field(description="The launch's `sub`: the student's LTI user id.")
    context_id: str | None
    context_title: str | None
    resource_link_id: str | None
    lineitem_url: str | None
    lineitems_url: str | None
    ags_scopes: list[str]
    roles: list[str]
    launched_at: datetime
    gradable: bool = Field(
        description="Scores can be passed back: the launch named a line item with the score scope."
    )
    reasons: list[ReasonOut] = Field(
        description="Why grades cannot be passed back from this launch (empty when gradable)."
    )

    @classmethod
    def of(cls, launch: Launch) -> LaunchOut:
        gradable = can_post_scores(launch.lineitem_url, launch.ags_scopes)
        return cls(
            id=launch.id,
            formative_id=launch.formative_id,
            student_id=launch.student_id,
            class_id=launch.class_id,
            platform_id=launch.platform_id,
            deployment_id=launch.deployment_id,
            lti_user_id=launch.lti_user_id,
            context_id=launch.context_id,
            context_title=launch.context_title,
            resource_link_id=launch.resource_link_id,
            lineitem_url=launch.lineitem_url,
            lineitems_url=launch.lineitems_url,
            ags_scopes=list(launch.ags_scopes),
            roles=list(launch.roles),
            launched_at=launch.launched_at,
            gradable=gradable,
            reasons=[] if gradable else [ReasonOut.of(reason(ReasonCode.not_a_canvas_assignment))],
        )


def _registration(platform: Platform) -> Registration:
    return Registration(
        issuer=platform.issuer,
        client_id=platform.client_id,
        jwks_url=platform.jwks_url,
        deployment_ids=tuple(platform.deployment_ids),
    )


async def _addressed_platform(session: AsyncSession, token: str) -> Platform:
    address = read_address(token)
    registered = await find_platforms_by_issuer(session, address.issuer)
    if not registered:
        raise LaunchRejectedError(
            LaunchRejection.unknown_platform,
            f"no platform with issuer {address.issuer!r} is registered",
        )
    for platform in registered:
        if address.names_client(platform.client_id):
            if not platform.active:
                raise LaunchRejectedError(
                    LaunchRejection.platform_inactive,
                    f"the registration of {address.issuer!r} is deactivated",
                )
            return platform
    raise LaunchRejectedError(
        LaunchRejection.invalid_audience,
        f"the id_token's audience names no client_id registered for {address.issuer!r}",
    )


def _check_service_urls(
    claims: LaunchClaims, platform: Platform, insecure_hosts: Iterable[str]
) -> None:
    for url in (claims.lineitem_url, claims.lineitems_url):
        if url is None:
            continue
        try:
            check_outbound_url(
                url, allowed_hosts=platform.allowed_hosts, insecure_hosts=insecure_hosts
            )
        except UnsafeUrlError as exc:
            raise LaunchRejectedError(
                LaunchRejection.lineitem_host_not_allowed,
                f"the launch's AGS URL is refused ({exc.code}): {exc}",
            ) from exc


async def record_launch(
    sessions: async_sessionmaker[AsyncSession],
    body: LaunchIn,
    *,
    jwks: JwksCache,
    now: datetime,
    insecure_hosts: Iterable[str],
) -> LaunchOut:
    """Verify the launch and keep it as the student's binding for the formative (committed).

    Raises LaunchRejectedError when the token or its URLs are refused.
    """
    async with sessions() as session:
        platform = await _addressed_platform(session, body.id_token)
    # The platform's keys may need fetching: no database connection is held meanwhile.
    claims = await verify_launch(body.id_token, _registration(platform), jwks=jwks, now=now)
    _check_service_urls(claims, platform, insecure_hosts)
    binding = LaunchBinding(
        formative_id=body.formative_id,
        student_id=body.student_id,
        class_id=body.class_id,
        platform_id=platform.id,
        deployment_id=claims.deployment_id,
        lti_user_id=claims.lti_user_id,
        context_id=claims.context_id,
        context_title=claims.context_title,
        resource_link_id=claims.resource_link_id,
        lineitem_url=claims.lineitem_url,
        lineitems_url=claims.lineitems_url,
        ags_scopes=list(claims.ags_scopes),
        roles=list(claims.roles),
        launched_at=now,
    )
    async with sessions() as session, session.begin():
        bound = await bind_id_token(
            session,
            id_token_key(platform.issuer, claims),
            body.student_id,
            expires_at=datetime.fromtimestamp(claims.expires_at + LEEWAY_SECONDS, UTC),
            now=now,
        )
        if bound != body.student_id:
            raise LaunchRejectedError(
                LaunchRejection.id_token_reused,
                "this id_token was already recorded for another student: each launch "
                "binds one Formative student",
            )
        launch = await save_launch(session, binding)
    return LaunchOut.of(launch)


def id_token_key(issuer: str, claims: LaunchClaims) -> str:
    """What identifies one id_token: its issuer, `sub`, `nonce` and `jti`."""
    parts = [issuer, claims.lti_user_id, claims.nonce, claims.token_id or ""]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()
