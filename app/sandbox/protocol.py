"""Names Canvas and the LTI specs fix: scopes, media types, claim and extension keys.

Every other sandbox module imports these instead of spelling the strings again.
"""

from __future__ import annotations

from typing import Final

SCOPE_PREFIX: Final = "https://purl.imsglobal.org/spec/lti-ags/scope/"
SCOPE_LINEITEM: Final = SCOPE_PREFIX + "lineitem"
SCOPE_LINEITEM_READONLY: Final = SCOPE_PREFIX + "lineitem.readonly"
SCOPE_RESULT_READONLY: Final = SCOPE_PREFIX + "result.readonly"
SCOPE_SCORE: Final = SCOPE_PREFIX + "score"
AGS_SCOPES: Final = (SCOPE_LINEITEM, SCOPE_LINEITEM_READONLY, SCOPE_RESULT_READONLY, SCOPE_SCORE)

MEDIA_SCORE: Final = "application/vnd.ims.lis.v1.score+json"
MEDIA_LINEITEM: Final = "application/vnd.ims.lis.v2.lineitem+json"
MEDIA_LINEITEM_CONTAINER: Final = "application/vnd.ims.lis.v2.lineitemcontainer+json"
MEDIA_RESULT_CONTAINER: Final = "application/vnd.ims.lis.v2.resultcontainer+json"
MEDIA_JSON: Final = "application/json"

EXT_SUBMISSION: Final = "https://canvas.instructure.com/lti/submission"
EXT_SUBMISSION_TYPE: Final = "https://canvas.instructure.com/lti/submission_type"
EXT_LAUNCH_URL: Final = "https://canvas.instructure.com/lti/launch_url"

ASSERTION_TYPE_JWT_BEARER: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_PATH: Final = "/login/oauth2/token"
PLATFORM_JWKS_PATH: Final = "/api/lti/security/jwks"
OPENID_CONFIGURATION_PATH: Final = "/api/lti/security/openid-configuration"
REGISTRATIONS_PATH: Final = "/api/lti/registrations"
AUTHORIZE_PATH: Final = "/api/lti/authorize_redirect"
PLATFORM_CONFIGURATION_CLAIM: Final = "https://purl.imsglobal.org/spec/lti-platform-configuration"
TOOL_CONFIGURATION_CLAIM: Final = "https://purl.imsglobal.org/spec/lti-tool-configuration"
EXT_PRIVACY_LEVEL: Final = "https://canvas.instructure.com/lti/privacy_level"
EXT_ACCOUNT_NAME: Final = "https://canvas.instructure.com/lti/account_name"
AGS_PATH_PREFIX: Final = "/api/lti/"

CLAIM_PREFIX: Final = "https://purl.imsglobal.org/spec/lti/claim/"
CLAIM_MESSAGE_TYPE: Final = CLAIM_PREFIX + "message_type"
CLAIM_VERSION: Final = CLAIM_PREFIX + "version"
CLAIM_DEPLOYMENT_ID: Final = CLAIM_PREFIX + "deployment_id"
CLAIM_TARGET_LINK_URI: Final = CLAIM_PREFIX + "target_link_uri"
CLAIM_RESOURCE_LINK: Final = CLAIM_PREFIX + "resource_link"
CLAIM_CONTEXT: Final = CLAIM_PREFIX + "context"
CLAIM_ROLES: Final = CLAIM_PREFIX + "roles"
CLAIM_TOOL_PLATFORM: Final = CLAIM_PREFIX + "tool_platform"
CLAIM_LAUNCH_PRESENTATION: Final = CLAIM_PREFIX + "launch_presentation"
CLAIM_CUSTOM: Final = CLAIM_PREFIX + "custom"
CLAIM_LIS: Final = CLAIM_PREFIX + "lis"
CLAIM_AGS_ENDPOINT: Final = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"

ROLE_LEARNER: Final = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
ROLE_STUDENT: Final = "http://purl.imsglobal.org/vocab/lis/v2/institution/person#Student"
CONTEXT_TYPE_COURSE: Final = "http://purl.imsglobal.org/vocab/lis/v2/course#CourseOffering"

ACTIVITY_PROGRESS_VALUES: Final = ("Initialized", "Started", "InProgress", "Submitted", "Completed")
GRADING_PROGRESS_VALUES: Final = ("FullyGraded", "Pending", "PendingManual", "Failed", "NotReady")
GRADING_PROGRESS_GRADED: Final = ("FullyGraded", "PendingManual")

SUBMISSION_TYPES: Final = (
    "none",
    "basic_lti_launch",
    "online_text_entry",
    "online_url",
    "external_tool",
    "online_upload",
)
LINE_ITEM_SUBMISSION_TYPES: Final = ("none", "external_tool")
