"""Development conveniences: a teacher-token secret kept in var/, and teacher tokens to try the
teacher page with (`passback teacher-token`, the demo, the start-up lines).

Production teacher tokens are Formative's: it signs them with the configured secret (HS256) or
its own keys (RS256, `PASSBACK_TEACHER_TOKEN_JWKS_URL`); nothing here runs in that path.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from urllib.parse import quote

from joserfc import jwt
from joserfc.jwk import OctKey
from pydantic import SecretStr

from app.config import Settings

DEV_TEACHER_SECRET_FILE = "dev-teacher-token-secret"
DEFAULT_TEACHER_TOKEN_TTL_SECONDS = 8 * 3600


class NoTeacherTokenSecretError(Exception):
    """No HS256 secret to sign a teacher token with."""

    def __init__(self) -> None:
        super().__init__(
            "no teacher-token secret: set PASSBACK_TEACHER_TOKEN_SECRET, or start the "
            "service once with scripts/start (it keeps a development secret in var/)"
        )


def _write_private(path: Path, text: str) -> None:
    """Create the file readable by its owner only from the start (no window of 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def development_teacher_secret(settings: Settings, *, create: bool) -> str | None:
    """The secret of var/dev-teacher-token-secret (made when `create` and absent)."""
    path = settings.var_dir / DEV_TEACHER_SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    if not create:
        return None
    secret = secrets.token_urlsafe(32)
    try:
        _write_private(path, secret + "\n")
    except FileExistsError:  # another process made it first: use theirs
        return path.read_text().strip()
    return secret


def with_development_teacher_secret(settings: Settings) -> Settings:
    """Settings that verify development teacher tokens, when no way to verify teacher tokens
    is configured (the development mode of `scripts/start`)."""
    if settings.teacher_token_secret is not None or settings.teacher_token_jwks_url:
        return settings
    secret = development_teacher_secret(settings, create=True)
    return settings.model_copy(update={"teacher_token_secret": SecretStr(secret or "")})


def teacher_token_secret(settings: Settings) -> str:
    """The HS256 secret teacher tokens are signed with here: the setting, else the
    development secret in var/; `NoTeacherTokenSecretError` when neither exists."""
    if settings.teacher_token_secret is not None:
        return settings.teacher_token_secret.get_secret_value()
    secret = development_teacher_secret(settings, create=False)
    if not secret:
        raise NoTeacherTokenSecretError()
    return secret


def mint_teacher_token(
    secret: str,
    teacher_id: str,
    *,
    audience: str,
    ttl_seconds: int = DEFAULT_TEACHER_TOKEN_TTL_SECONDS,
    formative_id: str | None = None,
    now: float | None = None,
) -> str:
    """An HS256 teacher token as Formative would sign it (`sub`, `aud`, `iat`, `exp`)."""
    issued_at = int(time.time() if now is None else now)
    claims: dict[str, object] = {
        "sub": teacher_id,
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + ttl_seconds,
    }
    if formative_id is not None:
        claims["formative_id"] = formative_id
    return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, OctKey.import_key(secret))


def teacher_page_url(base_url: str, formative_id: str, token: str) -> str:
    """The teacher page of a formative, with the token in the fragment (never sent)."""
    page = f"/teach/formatives/{quote(formative_id, safe='')}/passback"
    return f"{base_url.rstrip('/')}{page}#token={token}"
