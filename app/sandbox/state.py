"""The platform's in-memory world and the Python API that seeds and inspects it.

`SandboxState` owns every record (developer keys, courses, users, enrolments, assignments,
line items, submissions, results), the platform's signing keys, the throttle, the fault plan
and the request log. All reads and writes of records happen under `lock`, a re-entrant thread
lock: request handlers hold it for the synchronous body of one request (never across an
await), and tests may call the seeding methods from another thread while the server runs.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from app.sandbox.config import DEFAULT_CLUSTER, CanvasFlags, SandboxConfig
from app.sandbox.faults import FaultPlan
from app.sandbox.jose import generate_rsa_key, load_rsa_private_key, rsa_public_jwk
from app.sandbox.models import (
    Assignment,
    Course,
    CourseState,
    DeveloperKey,
    Enrollment,
    EnrollmentState,
    GradingType,
    LineItem,
    RegistrationToken,
    Result,
    Submission,
    ToolInstall,
    ToolRegistration,
    User,
)
from app.sandbox.protocol import AGS_SCOPES
from app.sandbox.request_log import RequestLog
from app.sandbox.throttle import Throttle

NumberLike = Decimal | int | float | str


def as_decimal(value: NumberLike) -> Decimal:
    """Exact decimal of a number; floats go through their shortest repr (0.1 → 0.1)."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


class UnknownRecord(LookupError):
    """A seeding call named a record that does not exist."""


class SandboxState:
    """Everything one sandbox platform knows. See the module docstring for the locking rule."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.clock = self.config.clock
        self.lock = threading.RLock()
        key_pem = self.config.platform_key_pem
        self.platform_key: rsa.RSAPrivateKey = (
            load_rsa_private_key(key_pem) if key_pem else generate_rsa_key()
        )
        self.platform_kid = rsa_public_jwk(self.platform_key.public_key())["kid"]
        self.access_token_secret = secrets.token_bytes(32)
        self.throttle = Throttle(self.config.throttle, lambda: self.clock().timestamp())
        self.faults = FaultPlan(self.config.faults, self.config.fault_seed)
        self.request_log = RequestLog(self.config.request_log_limit)
        self.flags = replace(self.config.flags)
        self.clusters = dict(self.config.clusters)
        """Port of each Canvas host this sandbox plays → its database cluster id."""
        self._client_ids = itertools.count(10000000000001)
        self._ids = itertools.count(1001)
        self._clear_records()

    # ----------------------------------------------------------------- lifecycle

    def _clear_records(self) -> None:
        self.developer_keys: dict[str, DeveloperKey] = {}
        self.courses: dict[str, Course] = {}
        self.users: dict[str, User] = {}
        self.enrollments: dict[tuple[str, str], Enrollment] = {}
        self.assignments: dict[str, Assignment] = {}
        self.line_items: dict[str, LineItem] = {}
        self.submissions: dict[tuple[str, str], Submission] = {}
        self.results: dict[str, Result] = {}
        self._users_by_lti_id: dict[str, User] = {}
        self._results_by_owner: dict[tuple[str, str], Result] = {}
        self.registration_tokens: dict[str, RegistrationToken] = {}
        self.tool_registrations: dict[str, ToolRegistration] = {}

    def reset(self) -> None:
        """Forget every record, bucket and logged request; restore the configured flags,
        throttle numbers and faults.

        The platform key (so cached JWKS stay valid) and id counters (so ids never repeat
        within a process) are kept.
        """
        with self.lock:
            self._clear_records()
            self.flags = replace(self.config.flags)
        self.throttle.configure(self.config.throttle)
        self.throttle.clear()
        self.faults.configure(self.config.faults)
        self.request_log.clear()

    def cluster_of(self, port: int | None) -> str:
        """The database cluster of the host served on `port` (Canvas buckets per cluster)."""
        return self.clusters.get(port, DEFAULT_CLUSTER) if port is not None else DEFAULT_CLUSTER

    def set_flags(self, flags: CanvasFlags) -> None:
        with self.lock:
            self.flags = replace(flags)

    def next_id(self) -> str:
        return str(next(self._ids))

    @property
    def issuer(self) -> str:
        return self.config.effective_issuer

    def platform_jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [rsa_public_jwk(self.platform_key.public_key(), kid=self.platform_kid)]}

    # ----------------------------------------------------------------- developer keys

    def create_developer_key(
        self,
        *,
        client_id: str | None = None,
        name: str = "Formative",
        scopes: Sequence[str] = AGS_SCOPES,
        public_jwk: Mapping[str, Any] | None = None,
        public_jwk_url: str | None = None,
        active: bool = True,
        enabled_in_account: bool = True,
    ) -> DeveloperKey:
        """A developer key whose tool key is inline (`public_jwk`) or at `public_jwk_url`."""
        with self.lock:
            client_id = client_id or str(next(self._client_ids))
            if client_id in self.developer_keys:
                raise ValueError(f"developer key {client_id} exists")
            key = DeveloperKey(
                client_id=client_id,
                name=name,
                scopes=tuple(scopes),
                public_jwk=None if public_jwk is None else dict(public_jwk),
                public_jwk_url=public_jwk_url,
                active=active,
                enabled_in_account=enabled_in_account,
            )
            self.developer_keys[client_id] = key
            return key

    def developer_key(self, client_id: str) -> DeveloperKey:
        with self.lock:
            try:
                return self.developer_keys[client_id]
            except KeyError:
                raise UnknownRecord(f"developer key {client_id}") from None

    def update_developer_key(
        self,
        client_id: str,
        *,
        active: bool | None = None,
        enabled_in_account: bool | None = None,
        scopes: Sequence[str] | None = None,
        public_jwk: Mapping[str, Any] | None = None,
        public_jwk_url: str | None = None,
    ) -> DeveloperKey:
        """Change a key; arguments left None stay as they are."""
        with self.lock:
            key = self.developer_key(client_id)
            if active is not None:
                key.active = active
            if enabled_in_account is not None:
                key.enabled_in_account = enabled_in_account
            if scopes is not None:
                key.scopes = tuple(scopes)
            if public_jwk is not None:
                key.public_jwk, key.public_jwk_url = dict(public_jwk), None
            if public_jwk_url is not None:
                key.public_jwk, key.public_jwk_url = None, public_jwk_url
            return key

    def record_token_grant(self, client_id: str) -> None:
        with self.lock:
            key = self.developer_keys.get(client_id)
            if key is not None:
                key.token_grants += 1
                key.token_grant_times.append(self.clock())

    def token_grants(self, client_id: str) -> int:
        """How many access tokens were granted to a developer key."""
        with self.lock:
            return self.developer_key(client_id).token_grants

    # ----------------------------------------------------------------- courses and tools

    def create_course(
        self,
        *,
        course_id: str | None = None,
        name: str | None = None,
        state: CourseState = CourseState.AVAILABLE,
        tools: Iterable[str] = (),
    ) -> Course:
        """A course, with the tools of the given developer keys installed in it."""
        with self.lock:
            course_id = course_id or self.next_id()
            if course_id in self.courses:
                raise ValueError(f"course {course_id} exists")
            course = Course(
                id=course_id,
                name=name or f"Course {course_id}",
                lti_context_id=uuid.uuid4().hex,
                state=state,
            )
            self.courses[course_id] = course
            for client_id in tools:
                self.install_tool(course_id, client_id)
            return course

    def course(self, course_id: str) -> Course:
        with self.lock:
            try:
                return self.courses[course_id]
            except KeyError:
                raise UnknownRecord(f"course {course_id}") from None

    def set_course_state(self, course_id: str, state: CourseState) -> Course:
        """Publish, conclude, delete or reopen a course."""
        with self.lock:
            course = self.course(course_id)
            course.state = state
            return course

    def install_tool(
        self, course_id: str, client_id: str, *, deployment_id: str | None = None
    ) -> ToolInstall:
        """Make the tool of `client_id` visible in a course (a ContextExternalTool)."""
        with self.lock:
            course = self.course(course_id)
            key = self.developer_key(client_id)
            install = ToolInstall(
                client_id=client_id,
                deployment_id=deployment_id
                or key.account_deployment_id
                or f"{self.next_id()}:{uuid.uuid4().hex}",
            )
            course.tools[client_id] = install
            return install

    def uninstall_tool(self, course_id: str, client_id: str) -> None:
        with self.lock:
            self.course(course_id).tools.pop(client_id, None)

    # ----------------------------------------------------------------- users

    def create_student(
        self,
        course_id: str,
        *,
        name: str | None = None,
        lti_id: str | None = None,
        user_id: str | None = None,
        email: str | None = None,
        enrollment_state: EnrollmentState = EnrollmentState.ACTIVE,
    ) -> User:
        """Enrol a student; an existing user (by `user_id` or `lti_id`) is reused."""
        with self.lock:
            self.course(course_id)
            user = self._existing_user(user_id, lti_id)
            if user is None:
                new_id = user_id or self.next_id()
                user = User(
                    id=new_id,
                    lti_id=lti_id or str(uuid.uuid4()),
                    name=name or f"Student {new_id}",
                    email=email,
                )
                self.users[user.id] = user
                self._users_by_lti_id[user.lti_id] = user
            self.enrollments[(course_id, user.id)] = Enrollment(
                course_id=course_id, user_id=user.id, state=enrollment_state
            )
            return user

    def _existing_user(self, user_id: str | None, lti_id: str | None) -> User | None:
        if user_id is not None and user_id in self.users:
            return self.users[user_id]
        if lti_id is not None:
            return self._users_by_lti_id.get(lti_id)
        return None

    def user(self, user_ref: str) -> User:
        """A user by Canvas id or LTI id."""
        with self.lock:
            user = self._existing_user(user_ref, user_ref)
            if user is None:
                raise UnknownRecord(f"user {user_ref}")
            return user

    def set_enrollment_state(
        self, course_id: str, user_ref: str, state: EnrollmentState
    ) -> Enrollment:
        with self.lock:
            user = self.user(user_ref)
            enrollment = self.enrollments.get((course_id, user.id))
            if enrollment is None:
                raise UnknownRecord(f"enrollment of {user_ref} in course {course_id}")
            enrollment.state = state
            return enrollment

    def students_of(self, course_id: str) -> list[tuple[User, Enrollment]]:
        with self.lock:
            return [
                (self.users[e.user_id], e)
                for (c_id, _), e in sorted(self.enrollments.items(), key=lambda i: int_key(i[0][1]))
                if c_id == course_id
            ]

    def find_student(self, course: Course, user_ref: object) -> User | None:
        """Canvas's user resolution for scores (canvas-ags.md §3.3, §9).

        The user whose LTI id, or else Canvas id (digits only), equals `user_ref`, holding an
        active student enrolment in a published course. Anyone else is not a student.
        """
        if isinstance(user_ref, bool) or not isinstance(user_ref, str | int):
            return None
        text = str(user_ref)
        if not text:
            return None
        with self.lock:
            user = self._users_by_lti_id.get(text)
            if user is None and text.isdigit():
                user = self.users.get(text)
            if user is None or not course.published:
                return None
            enrollment = self.enrollments.get((course.id, user.id))
            if enrollment is None or enrollment.state is not EnrollmentState.ACTIVE:
                return None
            return user

    # ----------------------------------------------------------------- assignments

    def create_assignment(
        self,
        course_id: str,
        *,
        name: str = "Assignment",
        points: NumberLike = 10,
        client_id: str | None = None,
        allowed_attempts: int | None = None,
        grading_type: GradingType = GradingType.POINTS,
        launch_url: str | None = None,
        assignment_id: str | None = None,
    ) -> Assignment:
        """An external-tool assignment and its coupled primary line item, as Canvas's UI makes.

        `client_id` names the tool; when omitted, the course's only installed tool is used.
        """
        with self.lock:
            course = self.course(course_id)
            if client_id is None:
                if len(course.tools) != 1:
                    raise ValueError("name the tool (client_id): the course has not exactly one")
                client_id = next(iter(course.tools))
            self.developer_key(client_id)
            assignment = Assignment(
                id=assignment_id or self.next_id(),
                course_id=course_id,
                name=name,
                points_possible=as_decimal(points),
                client_id=client_id,
                resource_link_id=str(uuid.uuid4()),
                launch_url=launch_url,
                allowed_attempts=allowed_attempts,
                grading_type=grading_type,
            )
            self.assignments[assignment.id] = assignment
            self.add_line_item(assignment, label=name, client_id=client_id, coupled=True)
            return assignment

    def assignment(self, assignment_id: str) -> Assignment:
        with self.lock:
            try:
                return self.assignments[assignment_id]
            except KeyError:
                raise UnknownRecord(f"assignment {assignment_id}") from None

    def add_line_item(
        self,
        assignment: Assignment,
        *,
        label: str,
        client_id: str | None,
        coupled: bool,
        score_maximum: Decimal | None = None,
        resource_id: str | None = None,
        tag: str | None = None,
        resource_link_id: str | None = None,
        submission_type_extension: Mapping[str, Any] | None = None,
    ) -> LineItem:
        """A line item on `assignment`; the first one is its primary line item."""
        with self.lock:
            is_first = not any(li.assignment_id == assignment.id for li in self.line_items.values())
            line_item = LineItem(
                id=self.next_id(),
                assignment_id=assignment.id,
                course_id=assignment.course_id,
                label=label,
                score_maximum=(
                    assignment.points_possible if score_maximum is None else score_maximum
                ),
                client_id=client_id,
                coupled=coupled,
                resource_id=resource_id,
                tag=tag,
                resource_link_id=(assignment.resource_link_id if is_first else resource_link_id),
                submission_type_extension=(
                    None if submission_type_extension is None else dict(submission_type_extension)
                ),
            )
            self.line_items[line_item.id] = line_item
            return line_item

    def primary_line_item(self, assignment_id: str) -> LineItem | None:
        """The earliest active line item of an assignment: the only one that grades."""
        with self.lock:
            return min(
                (
                    li
                    for li in self.line_items.values()
                    if li.assignment_id == assignment_id and li.active
                ),
                key=lambda li: int_key(li.id),
                default=None,
            )

    def set_assignment_points(self, assignment_id: str, points: NumberLike) -> Assignment:
        """Change points possible; Canvas copies them to the primary line item."""
        with self.lock:
            assignment = self.assignment(assignment_id)
            assignment.points_possible = as_decimal(points)
            primary = self.primary_line_item(assignment_id)
            if primary is not None:
                primary.score_maximum = assignment.points_possible
            return assignment

    def set_allowed_attempts(self, assignment_id: str, allowed_attempts: int | None) -> Assignment:
        with self.lock:
            assignment = self.assignment(assignment_id)
            assignment.allowed_attempts = allowed_attempts
            return assignment

    def delete_assignment(self, assignment_id: str, *, keep_line_items: bool = False) -> None:
        """Delete an assignment, and its line items unless `keep_line_items` (the Canvas state
        where line item show answers 404 with an empty body)."""
        with self.lock:
            self.assignment(assignment_id).deleted = True
            if not keep_line_items:
                for line_item in self.line_items.values():
                    if line_item.assignment_id == assignment_id:
                        line_item.active = False

    # ----------------------------------------------------------------- submissions

    def submission(self, assignment_id: str, user_ref: str) -> Submission | None:
        with self.lock:
            return self.submissions.get((assignment_id, self.user(user_ref).id))

    def submission_for(self, assignment_id: str, user_id: str) -> Submission:
        """The submission of a user, created empty when there is none yet."""
        with self.lock:
            return self.submissions.setdefault(
                (assignment_id, user_id), Submission(assignment_id=assignment_id, user_id=user_id)
            )

    def grade_as_teacher(
        self, assignment_id: str, user_ref: str, score: NumberLike | None
    ) -> Submission:
        """Grade in the gradebook as a teacher would (not through AGS)."""
        with self.lock:
            submission = self.submission_for(assignment_id, self.user(user_ref).id)
            submission.score = None if score is None else as_decimal(score)
            submission.grade = None if score is None else str(submission.score)
            submission.grader = "teacher"
            submission.graded_at = self.clock()
            submission.needs_review = False
            return submission

    def results_of(self, line_item_id: str) -> list[Result]:
        with self.lock:
            return sorted(
                (r for r in self.results.values() if r.line_item_id == line_item_id and r.active),
                key=lambda r: int_key(r.id),
            )

    def result_of(self, line_item_id: str, user_id: str) -> Result | None:
        with self.lock:
            result = self._results_by_owner.get((line_item_id, user_id))
            return result if result is not None and result.active else None

    def new_result(
        self, line_item: LineItem, user: User, *, timestamp: datetime, activity: str, grading: str
    ) -> Result:
        with self.lock:
            result = Result(
                id=self.next_id(),
                line_item_id=line_item.id,
                user_id=user.id,
                score_given=None,
                score_maximum=None,
                comment=None,
                activity_progress=activity,
                grading_progress=grading,
                created_at=timestamp,
                updated_at=timestamp,
            )
            self.results[result.id] = result
            self._results_by_owner[(line_item.id, user.id)] = result
            return result

    def line_items_of(self, course_id: str) -> Iterator[LineItem]:
        with self.lock:
            items = sorted(self.line_items.values(), key=lambda li: int_key(li.id))
        return (li for li in items if li.course_id == course_id)


def int_key(record_id: str) -> tuple[int, str]:
    """Sort key that orders numeric ids numerically and others after them."""
    return (int(record_id), "") if record_id.isdigit() else (1 << 62, record_id)
