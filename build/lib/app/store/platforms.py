"""Queries on platform registrations."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import Platform


async def list_platforms(session: AsyncSession) -> Sequence[Platform]:
    result = await session.scalars(select(Platform).order_by(Platform.created_at, Platform.id))
    return result.all()


async def get_platform(session: AsyncSession, platform_id: str) -> Platform | None:
    return await session.get(Platform, platform_id)


async def find_platform(session: AsyncSession, issuer: str, client_id: str) -> Platform | None:
    return await session.scalar(
        select(Platform).where(Platform.issuer == issuer, Platform.client_id == client_id)
    )


async def find_platforms_by_issuer(session: AsyncSession, issuer: str) -> Sequence[Platform]:
    return (await session.scalars(select(Platform).where(Platform.issuer == issuer))).all()


def new_platform(now: datetime, **fields: object) -> Platform:
    return Platform(created_at=now, updated_at=now, **fields)
