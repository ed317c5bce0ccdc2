"""Queries on registration invites (single-use links that start Dynamic Registration)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import RegistrationInvite


class ClaimRefusal(enum.StrEnum):
    unknown = "invite_unknown"
    expired = "invite_expired"
    used = "invite_used"


async def add_invite(
    session: AsyncSession, *, token_sha256: str, label: str, now: datetime, expires_at: datetime
) -> RegistrationInvite:
    """Store a new invite (committed on return)."""
    invite = RegistrationInvite(
        token_sha256=token_sha256, label=label, created_at=now, expires_at=expires_at
    )
    session.add(invite)
    await session.commit()
    return invite


async def find_invite(session: AsyncSession, token_sha256: str) -> RegistrationInvite | None:
    return await session.scalar(
        select(RegistrationInvite).where(RegistrationInvite.token_sha256 == token_sha256)
    )


def refusal_of(invite: RegistrationInvite | None, now: datetime) -> ClaimRefusal | None:
    """Why the invite cannot start a registration now, or None when it can."""
    if invite is None:
        return ClaimRefusal.unknown
    if invite.used_at is not None:
        return ClaimRefusal.used
    if invite.expires_at <= now:
        return ClaimRefusal.expired
    return None


async def claim_invite(
    session: AsyncSession, token_sha256: str, now: datetime
) -> RegistrationInvite | ClaimRefusal:
    """Mark the invite in use (committed), or say why it cannot be. Of two registrations
    started at once with the same invite, exactly one claims it."""
    invite = await find_invite(session, token_sha256)
    refusal = refusal_of(invite, now)
    if refusal is not None:
        return refusal
    assert invite is not None
    claimed = await session.execute(
        update(RegistrationInvite)
        .where(RegistrationInvite.id == invite.id, RegistrationInvite.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    if getattr(claimed, "rowcount", 0) != 1:
        return ClaimRefusal.used
    await session.refresh(invite)
    return invite


async def release_invite(session: AsyncSession, invite_id: str) -> None:
    """Make a claimed invite usable again: its registration failed before a platform was
    recorded (committed)."""
    await session.execute(
        update(RegistrationInvite)
        .where(RegistrationInvite.id == invite_id, RegistrationInvite.platform_id.is_(None))
        .values(used_at=None)
        .execution_options(synchronize_session=False)
    )
    await session.commit()


async def complete_invite(session: AsyncSession, invite_id: str, platform_id: str) -> None:
    """Record the platform registration the invite made (committed)."""
    await session.execute(
        update(RegistrationInvite)
        .where(RegistrationInvite.id == invite_id)
        .values(platform_id=platform_id)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
