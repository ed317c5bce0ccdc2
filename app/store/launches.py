"""Queries on launches: the binding of a Formative student and formative to a Canvas line item."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import Launch, UsedIdToken
from app.store.upsert import insert_for


@dataclass(frozen=True)
class LaunchBinding:
    """Everything a verified launch tells about where a student's grade for a formative goes."""

    formative_id: str
    student_id: str
    class_id: str
    platform_id: str
    deployment_id: str
    lti_user_id: str
    context_id: str | None
    context_title: str | None
    resource_link_id: str | None
    lineitem_url: str | None
    lineitems_url: str | None
    ags_scopes: list[str]
    roles: list[str]
    launched_at: datetime


async def save_launch(session: AsyncSession, binding: LaunchBinding) -> Launch:
    """Keep the binding as the student's launch for the formative (the newest launch wins)."""
    values = asdict(binding)
    changed = {name: value for name, value in values.items() if name not in _KEY}
    statement = (
        insert_for(session, Launch)
        .values(**values)
        .on_conflict_do_update(index_elements=list(_KEY), set_=changed)
        .returning(Launch)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one()


_KEY = ("formative_id", "student_id")


async def find_launch(session: AsyncSession, formative_id: str, student_id: str) -> Launch | None:
    return await session.scalar(
        select(Launch).where(Launch.formative_id == formative_id, Launch.student_id == student_id)
    )


async def bind_id_token(
    session: AsyncSession, token_key: str, student_id: str, *, expires_at: datetime, now: datetime
) -> str:
    """Record that the id_token `token_key` binds `student_id`, unless it was recorded
    before; returns the student it binds (the earlier one, when it was)."""
    statement = (
        insert_for(session, UsedIdToken)
        .values(token_key=token_key, student_id=student_id, expires_at=expires_at, used_at=now)
        .on_conflict_do_nothing(index_elements=["token_key"])
    )
    await session.execute(statement)
    bound = await session.scalar(
        select(UsedIdToken.student_id).where(UsedIdToken.token_key == token_key)
    )
    assert bound is not None
    return bound
