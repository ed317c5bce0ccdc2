"""What the tool tells a platform about itself: the Dynamic Registration request and the
Canvas developer-key JSON of a manual install.

Both describe the same tool: Formative's launch and login URLs, the service's JWKS, the AGS
scopes passback uses (including `result.readonly` for the read-back), and for Canvas the
privacy level and the placements of a tool that teachers attach to assignments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from app.lti.tokens import SCOPE_LINEITEM_READONLY, SCOPE_PREFIX, SCOPE_RESULT_READONLY, SCOPE_SCORE

SCOPE_LINEITEM = SCOPE_PREFIX + "lineitem"
TOOL_SCOPES: tuple[str, ...] = (
    SCOPE_LINEITEM,
    SCOPE_LINEITEM_READONLY,
    SCOPE_RESULT_READONLY,
    SCOPE_SCORE,
)
"""AGS scopes the tool asks for: line items (create and read), results (the read-back of what
Canvas holds), scores."""

TOOL_CONFIGURATION_CLAIM = "https://purl.imsglobal.org/spec/lti-tool-configuration"
CANVAS_PLATFORM = "canvas.instructure.com"
CANVAS_EXTENSION_PREFIX = "https://canvas.instructure.com/lti/"
CANVAS_PRIVACY_LEVEL = CANVAS_EXTENSION_PREFIX + "privacy_level"
CANVAS_TOOL_ID = CANVAS_EXTENSION_PREFIX + "tool_id"
PRIVACY_LEVEL = "public"
"""Formative matches a launch to its student and class by name and email."""
LAUNCH_CLAIMS = ("iss", "sub", "name", "given_name", "family_name", "email", "locale")
TOOL_ID = "formative-passback"
MESSAGE_RESOURCE_LINK = "LtiResourceLinkRequest"
MESSAGE_DEEP_LINKING = "LtiDeepLinkingRequest"
CANVAS_PLACEMENTS: tuple[tuple[str, str], ...] = (
    # A teacher picks a formative while creating an assignment (External Tool submission).
    ("assignment_selection", MESSAGE_DEEP_LINKING),
    # Or adds one to a module; Canvas makes it an assignment when given points.
    ("link_selection", MESSAGE_DEEP_LINKING),
)


@dataclass(frozen=True)
class ToolDescription:
    name: str
    description: str
    launch_url: str
    login_url: str
    jwks_url: str

    @property
    def domain(self) -> str:
        return (urlsplit(self.launch_url).hostname or "").lower()


def registration_request(tool: ToolDescription, *, platform_is_canvas: bool) -> dict[str, Any]:
    """The client metadata POSTed to the platform's registration endpoint (LTI DR 1.0 §3.5),
    with Canvas's extensions when the platform is Canvas."""
    configuration: dict[str, Any] = {
        "domain": tool.domain,
        "target_link_uri": tool.launch_url,
        "description": tool.description,
        "claims": list(LAUNCH_CLAIMS),
        "messages": [_message(tool, placement, kind) for placement, kind in CANVAS_PLACEMENTS]
        if platform_is_canvas
        else [{"type": MESSAGE_DEEP_LINKING, "target_link_uri": tool.launch_url}],
    }
    if platform_is_canvas:
        configuration[CANVAS_PRIVACY_LEVEL] = PRIVACY_LEVEL
        configuration[CANVAS_TOOL_ID] = TOOL_ID
    return {
        "application_type": "web",
        "client_name": tool.name,
        "grant_types": ["client_credentials", "implicit"],
        "response_types": ["id_token"],
        "initiate_login_uri": tool.login_url,
        "redirect_uris": [tool.launch_url],
        "jwks_uri": tool.jwks_url,
        "token_endpoint_auth_method": "private_key_jwt",
        "scope": " ".join(TOOL_SCOPES),
        TOOL_CONFIGURATION_CLAIM: configuration,
    }


def _message(tool: ToolDescription, placement: str, kind: str) -> dict[str, Any]:
    return {
        "type": kind,
        "target_link_uri": tool.launch_url,
        "label": tool.name,
        "placements": [placement],
    }


def canvas_developer_key_json(tool: ToolDescription) -> dict[str, Any]:
    """Canvas's LTI 1.3 developer-key JSON (Admin → Developer Keys → LTI Key → Paste JSON)."""
    placements = [
        {
            "placement": placement,
            "message_type": kind,
            "target_link_uri": tool.launch_url,
            "text": tool.name,
        }
        for placement, kind in CANVAS_PLACEMENTS
    ]
    return {
        "title": tool.name,
        "description": tool.description,
        "target_link_uri": tool.launch_url,
        "oidc_initiation_url": tool.login_url,
        "public_jwk_url": tool.jwks_url,
        "scopes": list(TOOL_SCOPES),
        "custom_fields": {},
        "extensions": [
            {
                "platform": CANVAS_PLATFORM,
                "domain": tool.domain,
                "tool_id": TOOL_ID,
                "privacy_level": PRIVACY_LEVEL,
                "settings": {
                    "text": tool.name,
                    "platform": CANVAS_PLATFORM,
                    "placements": placements,
                },
            }
        ],
    }
