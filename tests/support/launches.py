"""Launches written straight to the database, without a platform to issue them: for tests
and benchmarks of what comes after a launch (intake), where the LTI exchange is not the point."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.lti.launch import SCOPE_SCORE
from app.store.launches import LaunchBinding, save_launch
from app.store.models import Platform
from app.store.platforms import new_platform

CANVAS = "https://canvas.example.edu"
DEPLOYMENT_ID = "1:dep"


async def ensure_platform(session: AsyncSession, now: datetime, platform_id: str) -> Platform:
    """The Canvas platform `platform_id`, registered if it is not yet."""
    platform = await session.get(Platform, platform_id)
    if platform is None:
        platform = new_platform(
            now,
            id=platform_id,
            issuer=CANVAS,
            client_id="10000000000001",
            deployment_ids=[DEPLOYMENT_ID],
            token_url=f"{CANVAS}/login/oauth2/token",
            jwks_url=f"{CANVAS}/api/lti/security/jwks",
            allowed_hosts=["canvas.example.edu"],
            label="Canvas",
        )
        session.add(platform)
        await session.flush()
    return platform


async def launch_from_assignment(
    session: AsyncSession,
    now: datetime,
    *,
    platform_id: str,
    formative_id: str,
    student_id: str,
    class_id: str,
    lineitem_id: str,
    lti_user_id: str | None = None,
) -> None:
    """The student opened the formative from Canvas assignment (line item) `lineitem_id`."""
    await save_launch(
        session,
        LaunchBinding(
            formative_id=formative_id,
            student_id=student_id,
            class_id=class_id,
            platform_id=platform_id,
            deployment_id=DEPLOYMENT_ID,
            lti_user_id=lti_user_id or f"lti-{student_id}",
            context_id="course-1",
            context_title="Course",
            resource_link_id=f"rl-{lineitem_id}",
            lineitem_url=f"{CANVAS}/api/lti/courses/1/line_items/{lineitem_id}",
            lineitems_url=f"{CANVAS}/api/lti/courses/1/line_items",
            ags_scopes=[SCOPE_SCORE],
            roles=[],
            launched_at=now,
        ),
    )
