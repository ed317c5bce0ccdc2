"""An independent LTI client (pylti1p3, synchronous `requests`) passes a grade to the sandbox."""

from __future__ import annotations

import asyncio
from typing import Any

from cryptography.hazmat.primitives import serialization
from pylti1p3.assignments_grades import AssignmentsGradesService
from pylti1p3.grade import Grade
from pylti1p3.service_connector import ServiceConnector
from pylti1p3.tool_config.dict import ToolConfDict

from app.sandbox import seed_scenario
from app.sandbox.protocol import CLAIM_AGS_ENDPOINT
from tests.sandbox.conftest import JwksHost
from tests.support.sandbox import RunningSandbox, ToolKey


async def test_pylti1p3_obtains_a_token_and_puts_a_grade_the_gradebook_shows(
    sandbox: RunningSandbox, tool_key: ToolKey, jwks_host: JwksHost
) -> None:
    jwks_host.documents["/pylti1p3/jwks.json"] = tool_key.jwks()
    world = seed_scenario(
        sandbox.state, tool_jwks_url=jwks_host.url("/pylti1p3/jwks.json"), points=25
    )
    student = world.students[0]
    launch = await sandbox.admin.launch(
        world.course_id, student.lti_id, assignment_id=world.assignment_id
    )
    tool_conf = ToolConfDict(
        {
            sandbox.issuer: [
                {
                    "default": True,
                    "client_id": world.client_id,
                    "auth_login_url": sandbox.url("/api/lti/authorize_redirect"),
                    "auth_token_url": sandbox.token_url,
                    "auth_audience": None,
                    "key_set_url": sandbox.jwks_url,
                    "key_set": None,
                    "deployment_ids": [world.deployment_id],
                }
            ]
        }
    )
    public_pem = tool_key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tool_conf.set_private_key(sandbox.issuer, tool_key.private_key_pem(), world.client_id)
    tool_conf.set_public_key(sandbox.issuer, public_pem.decode(), world.client_id)

    def put_grade() -> dict[str, Any]:
        registration = tool_conf.find_registration_by_params(sandbox.issuer, world.client_id)
        ags = AssignmentsGradesService(
            ServiceConnector(registration), launch["claims"][CLAIM_AGS_ENDPOINT]
        )
        grade = (
            Grade()
            .set_score_given(17)
            .set_score_maximum(20)
            .set_timestamp("2026-11-20T14:03:11.250Z")
            .set_activity_progress("Completed")
            .set_grading_progress("FullyGraded")
            .set_user_id(launch["claims"]["sub"])
        )
        response = ags.put_grade(grade)
        return dict(response)

    answer = await asyncio.to_thread(put_grade)

    assert answer["body"]["resultUrl"].startswith(launch["claims"][CLAIM_AGS_ENDPOINT]["lineitem"])
    gradebook = await sandbox.admin.gradebook(world.course_id)
    (assignment,) = gradebook["assignments"]
    cell = next(c for c in assignment["submissions"] if c["lti_id"] == student.lti_id)
    assert (cell["score"], cell["attempt"], cell["grader"]) == (
        "21.25",
        1,
        f"tool:{world.client_id}",
    )
    assert sandbox.state.token_grants(world.client_id) == 1
    (token_call,) = await sandbox.admin.requests(path_contains="/login/oauth2/token")
    assert token_call["status"] == 200
