"""The tool's side of Dynamic Registration: what it accepts from a platform, what it sends."""

from __future__ import annotations

from typing import Any

import pytest

from app.lti.registration import (
    DynamicRegistrationError,
    parse_platform_configuration,
    parse_registration_answer,
)
from app.lti.tool import TOOL_CONFIGURATION_CLAIM, ToolDescription, registration_request

CANVAS_CLOUD = "https://canvas.instructure.com"


def configuration(issuer: str = CANVAS_CLOUD, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "issuer": issuer,
        "token_endpoint": "https://sso.canvaslms.com/login/oauth2/token",
        "jwks_uri": "https://sso.canvaslms.com/api/lti/security/jwks",
        "registration_endpoint": f"{issuer}/api/lti/registrations",
        "authorization_endpoint": "https://sso.canvaslms.com/api/lti/authorize_redirect",
        "https://purl.imsglobal.org/spec/lti-platform-configuration": {
            "product_family_code": "canvas"
        },
    }
    document.update(changes)
    return document


@pytest.mark.parametrize(
    "configuration_url",
    [
        "https://canvas.instructure.com:8443/api/lti/security/openid-configuration",
        "http://canvas.instructure.com/api/lti/security/openid-configuration",
        "https://evil.example/api/lti/security/openid-configuration",
        "https://school.instructure.com/api/lti/security/openid-configuration",
    ],
)
def test_an_issuer_not_at_the_configurations_origin_is_refused(configuration_url: str) -> None:
    with pytest.raises(DynamicRegistrationError) as refused:
        parse_platform_configuration(configuration(), configuration_url)
    assert refused.value.code == "issuer_mismatch"


def test_an_issuer_at_the_configurations_origin_is_accepted_with_its_default_port() -> None:
    url = "https://canvas.instructure.com:443/api/lti/security/openid-configuration?t=x"
    parsed = parse_platform_configuration(configuration(), url)
    assert parsed.issuer == CANVAS_CLOUD
    assert parsed.is_canvas


def test_canvas_cloud_registrations_may_send_grades_to_instructure_hosted_schools() -> None:
    url = f"{CANVAS_CLOUD}/api/lti/security/openid-configuration"
    hosts = parse_platform_configuration(configuration(), url).allowed_hosts()
    assert hosts == ["canvas.instructure.com", "sso.canvaslms.com", "*.instructure.com"]


def test_a_self_hosted_platform_allows_only_its_own_endpoints() -> None:
    issuer = "https://lms.school.edu"
    document = configuration(
        issuer,
        token_endpoint=f"{issuer}/login/oauth2/token",
        jwks_uri=f"{issuer}/api/lti/security/jwks",
        authorization_endpoint=None,
    )
    parsed = parse_platform_configuration(document, f"{issuer}/.well-known/openid-configuration")
    assert parsed.allowed_hosts() == ["lms.school.edu"]


@pytest.mark.parametrize(
    "missing", ["issuer", "token_endpoint", "jwks_uri", "registration_endpoint"]
)
def test_a_configuration_without_a_required_endpoint_is_refused(missing: str) -> None:
    document = configuration()
    del document[missing]
    with pytest.raises(DynamicRegistrationError) as refused:
        parse_platform_configuration(document, f"{CANVAS_CLOUD}/config")
    assert refused.value.code == "platform_configuration_invalid"


def test_the_deployment_is_read_from_canvas_or_from_the_ims_claim() -> None:
    canvas = parse_registration_answer({"client_id": 10000000000042, "deployment_id": "7:ab"})
    ims = parse_registration_answer(
        {"client_id": "abc", TOOL_CONFIGURATION_CLAIM: {"deployment_id": "dep-1"}}
    )
    none = parse_registration_answer({"client_id": "abc"})
    assert (canvas.client_id, canvas.deployment_id) == ("10000000000042", "7:ab")
    assert (ims.client_id, ims.deployment_id) == ("abc", "dep-1")
    assert none.deployment_id is None


@pytest.mark.parametrize("answer", [[], {"client_id": ""}, {"client_id": True}, {}])
def test_a_registration_answer_without_a_client_id_is_refused(answer: object) -> None:
    with pytest.raises(DynamicRegistrationError) as refused:
        parse_registration_answer(answer)
    assert refused.value.code == "platform_answer_invalid"


TOOL = ToolDescription(
    name="Formative",
    description="Formative assessments",
    launch_url="https://app.formative.example/lti/launch",
    login_url="https://app.formative.example/lti/login",
    jwks_url="https://passback.example/.well-known/jwks.json",
)


def test_canvas_gets_its_privacy_and_placement_extensions() -> None:
    body = registration_request(TOOL, platform_is_canvas=True)
    configuration = body[TOOL_CONFIGURATION_CLAIM]
    assert configuration["https://canvas.instructure.com/lti/privacy_level"] == "public"
    placements = [p for message in configuration["messages"] for p in message["placements"]]
    assert "assignment_selection" in placements
    assert configuration["domain"] == "app.formative.example"
    assert body["token_endpoint_auth_method"] == "private_key_jwt"
    assert set(body["grant_types"]) == {"client_credentials", "implicit"}


def test_other_platforms_get_no_canvas_extensions() -> None:
    body = registration_request(TOOL, platform_is_canvas=False)
    assert "canvas.instructure.com" not in str(body)
    assert body["scope"].split() == [
        "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
        "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly",
        "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly",
        "https://purl.imsglobal.org/spec/lti-ags/scope/score",
    ]
