"""What Formative knows of a formative before (or besides) events: `PUT /v1/formatives/{id}`
(SPEC §2.2, §3). Its title, teachers, organization and license, and its classes with their
students' names; a teacher can then preview it before any student launches."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from app.intake.event_in import Organization
from app.intake.schemas import FormativeId
from app.store import formatives as store

MAX_CLASSES = 500
MAX_STUDENTS_PER_CLASS = 5_000
MAX_STUDENTS = 20_000
MAX_TEACHERS = 1_000

Name = Annotated[StrictStr, Field(max_length=1024)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RosterStudent(_Strict):
    id: FormativeId
    name: Name = ""


class RosterClass(_Strict):
    id: FormativeId
    name: Name = ""
    students: list[RosterStudent] = Field(default_factory=list, max_length=MAX_STUDENTS_PER_CLASS)


class FormativePut(_Strict):
    """Everything Formative knows of the formative; a PUT replaces its classes and students."""

    title: Name
    teacher_ids: list[FormativeId] = Field(max_length=MAX_TEACHERS)
    organization: Organization
    classes: list[RosterClass] = Field(max_length=MAX_CLASSES)

    @model_validator(mode="after")
    def _one_class_per_student(self) -> FormativePut:
        class_ids = [group.id for group in self.classes]
        if len(set(class_ids)) != len(class_ids):
            raise ValueError("each class appears once")
        seen: set[str] = set()
        for group in self.classes:
            for student in group.students:
                if student.id in seen:
                    raise ValueError(
                        f"student {student.id!r} appears twice: a student is in one class of "
                        "a formative"
                    )
                seen.add(student.id)
        if len(seen) > MAX_STUDENTS:
            raise ValueError(f"at most {MAX_STUDENTS} students in all")
        return self


class FormativeOut(BaseModel):
    id: str
    title: str
    teacher_ids: list[str]
    organization_id: str
    license: str
    classes: int = Field(description="How many classes are now known.")
    students: int = Field(description="How many students the classes hold.")


async def put_formative(
    session: AsyncSession, formative_id: str, body: FormativePut
) -> FormativeOut:
    """Upsert the formative's facts and replace its roster, then commit. Events keep
    updating the facts they carry (an event newer than nothing overrides a PUT's title,
    teachers and license, as it would an older event's)."""
    await store.save_formative(
        session,
        store.FormativeRecord(
            id=formative_id,
            title=body.title,
            teacher_ids=list(body.teacher_ids),
            organization_id=body.organization.id,
            license=body.organization.license,
            classes=[
                store.ClassRecord(
                    class_id=group.id,
                    name=group.name,
                    students=[(student.id, student.name) for student in group.students],
                )
                for group in body.classes
            ],
        ),
    )
    await session.commit()
    return FormativeOut(
        id=formative_id,
        title=body.title,
        teacher_ids=list(body.teacher_ids),
        organization_id=body.organization.id,
        license=body.organization.license,
        classes=len(body.classes),
        students=sum(len(group.students) for group in body.classes),
    )
