"""Credentials the tests configure, and a way to mint teacher tokens."""

from __future__ import annotations

import base64
import secrets
import time

from joserfc import jwt
from joserfc.jwk import OctKey

ADMIN_KEY = "test-admin-key-0123456789"
EVENTS_KEY = "test-events-key-0123456789"
PASSBACK_KEY = "test-passback-key-0123456789"
TEACHER_TOKEN_SECRET = "test-teacher-secret-0123456789-abcdef"
# Seals the tool keys in test databases (PASSBACK_KEY_ENCRYPTION_KEY); new for every run.
KEY_ENCRYPTION_KEY = base64.b64encode(secrets.token_bytes(32)).decode()

API_KEYS = [
    {"name": "admin", "key": ADMIN_KEY, "scopes": ["admin"]},
    {"name": "formative-backend", "key": EVENTS_KEY, "scopes": ["events"]},
    {"name": "formative-ui", "key": PASSBACK_KEY, "scopes": ["passback"]},
]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def teacher_token(
    teacher_id: str,
    *,
    secret: str = TEACHER_TOKEN_SECRET,
    audience: str = "passback",
    expires_in: int = 3600,
) -> str:
    now = int(time.time())
    claims = {"sub": teacher_id, "aud": audience, "iat": now, "exp": now + expires_in}
    return jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(secret))


def teacher_headers(teacher_id: str) -> dict[str, str]:
    return bearer(teacher_token(teacher_id))
