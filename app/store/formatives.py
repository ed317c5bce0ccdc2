"""A formative's facts and roster as `PUT /v1/formatives/{id}` gives them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import Formative, FormativeClass, FormativeStudent
from app.store.upsert import insert_for

NEVER = datetime(1970, 1, 1, tzinfo=UTC)
"""The facts' time of a formative first known from a PUT: any event is newer."""


@dataclass(frozen=True)
class ClassRecord:
    class_id: str
    name: str
    students: Sequence[tuple[str, str]]
    """(student id, name)"""


@dataclass(frozen=True)
class FormativeRecord:
    id: str
    title: str
    teacher_ids: list[str]
    organization_id: str
    license: str
    classes: Sequence[ClassRecord]


async def save_formative(session: AsyncSession, record: FormativeRecord) -> None:
    """Upsert the formative's facts (the time of its facts is kept, so events keep updating
    them) and replace its classes and students, in the caller's transaction.

    The formative's row is written first, and so locked: concurrent PUTs of one formative
    replace its roster one after the other.
    """
    facts = {
        "title": record.title,
        "teacher_ids": record.teacher_ids,
        "organization_id": record.organization_id,
        "license": record.license,
    }
    statement = insert_for(session, Formative).values(
        id=record.id, auto_passback=False, all_auto_graded=False, updated_at=NEVER, **facts
    )
    await session.execute(
        statement.on_conflict_do_update(index_elements=[Formative.id], set_=facts)
    )
    await session.execute(
        delete(FormativeStudent).where(FormativeStudent.formative_id == record.id)
    )
    await session.execute(delete(FormativeClass).where(FormativeClass.formative_id == record.id))
    if record.classes:
        await session.execute(
            insert(FormativeClass),
            [
                {"formative_id": record.id, "class_id": group.class_id, "name": group.name}
                for group in record.classes
            ],
        )
    students = [
        {
            "formative_id": record.id,
            "student_id": student_id,
            "class_id": group.class_id,
            "name": name,
        }
        for group in record.classes
        for student_id, name in group.students
    ]
    if students:
        await session.execute(insert(FormativeStudent), students)
    session.expire_all()  # a loaded Formative must not shadow what was just written
