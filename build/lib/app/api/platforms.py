"""Platform registry routes: operators register the Canvas (or other LTI 1.3) platforms."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.api.auth import AdminCaller
from app.api.deps import Context, Session
from app.api.problems import ProblemError, problem_responses
from app.registry import (
    PlatformCreate,
    PlatformOut,
    PlatformUpdate,
    RegistryError,
    register_platform,
    update_platform,
)
from app.store import platforms as store
from app.store.models import Platform

router = APIRouter(prefix="/v1/platforms", tags=["platforms"])


def _problem(exc: RegistryError) -> ProblemError:
    return ProblemError(exc.status, exc.code, str(exc))


async def _get_or_404(session: Session, platform_id: str) -> Platform:
    platform = await store.get_platform(session, platform_id)
    if platform is None:
        raise ProblemError(404, "platform_not_found", f"no platform {platform_id!r}")
    return platform


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PlatformOut,
    responses=problem_responses(401, 403, 409, 422),
    summary="Register a platform",
)
async def create_platform(
    body: PlatformCreate, context: Context, session: Session, _caller: AdminCaller
) -> PlatformOut:
    try:
        platform = await register_platform(
            session, body, insecure_hosts=context.settings.insecure_hosts, now=context.clock()
        )
    except RegistryError as exc:
        raise _problem(exc) from exc
    return PlatformOut.of(platform)


@router.get(
    "",
    response_model=list[PlatformOut],
    responses=problem_responses(401, 403),
    summary="List platforms",
)
async def list_platforms(session: Session, _caller: AdminCaller) -> list[PlatformOut]:
    return [PlatformOut.of(platform) for platform in await store.list_platforms(session)]


@router.get(
    "/{platform_id}",
    response_model=PlatformOut,
    responses=problem_responses(401, 403, 404),
    summary="Read a platform",
)
async def read_platform(platform_id: str, session: Session, _caller: AdminCaller) -> PlatformOut:
    return PlatformOut.of(await _get_or_404(session, platform_id))


@router.patch(
    "/{platform_id}",
    response_model=PlatformOut,
    responses=problem_responses(401, 403, 404, 422),
    summary="Change a platform",
)
async def change_platform(
    platform_id: str, body: PlatformUpdate, context: Context, session: Session, _caller: AdminCaller
) -> PlatformOut:
    platform = await _get_or_404(session, platform_id)
    try:
        await update_platform(
            session,
            platform,
            body,
            insecure_hosts=context.settings.insecure_hosts,
            now=context.clock(),
        )
    except RegistryError as exc:
        raise _problem(exc) from exc
    return PlatformOut.of(platform)


@router.delete(
    "/{platform_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403, 404),
    summary="Deactivate a platform",
    description="Deactivates the registration: launches are refused and nothing is sent to it. "
    "Its history stays; PATCH `active: true` turns it back on.",
)
async def deactivate_platform(
    platform_id: str, context: Context, session: Session, _caller: AdminCaller
) -> Response:
    platform = await _get_or_404(session, platform_id)
    platform.active = False
    platform.updated_at = context.clock()
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
