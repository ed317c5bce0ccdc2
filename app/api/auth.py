"""Who is calling: service API keys with scopes, and teacher tokens (JWT signed by Formative).

Keys travel as `Authorization: Bearer <key>` and are compared by SHA-256 digest in constant
time. A key with scope `passback` may act for any teacher named in `X-Acting-Teacher-Id`.
Missing or wrong credentials answer 401 (`unauthorized`; for a teacher token `token_expired`
when only its time is up, `token_invalid` otherwise); a valid caller without the scope
answers 403.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import KeySet, OctKey
from joserfc.jws import extract_compact

from app.api.deps import Context
from app.api.problems import ProblemError
from app.config import Scope, Settings
from app.context import AppContext
from app.lti.jwks import JwksUnavailableError

ACTING_TEACHER_HEADER = "X-Acting-Teacher-Id"
TEACHER_TOKEN_ALGORITHMS = ("HS256", "RS256")
TEACHER_TOKEN_LEEWAY_SECONDS = 30

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="A service API key, or a teacher token (JWT) for the teacher endpoints.",
)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: a named API key, or a teacher."""

    kind: Literal["api_key", "teacher"]
    name: str
    scopes: frozenset[str]
    teacher_id: str | None = None

    @property
    def label(self) -> str:
        return f"key:{self.name}" if self.kind == "api_key" else f"teacher:{self.teacher_id}"


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, "unauthorized", detail)


def match_api_key(settings: Settings, presented: str) -> Caller | None:
    digest = hashlib.sha256(presented.encode()).digest()
    found: Caller | None = None
    for configured in settings.api_keys:
        # Compare against every key so the time taken does not reveal which one matched.
        if hmac.compare_digest(digest, configured.digest) and found is None:
            found = Caller("api_key", configured.name, frozenset(configured.scopes))
    return found


async def _teacher_keys(context: AppContext, token: str) -> OctKey | KeySet:
    settings = context.settings
    header = extract_compact(token.encode()).protected
    algorithm = header.get("alg")
    if algorithm == "HS256" and settings.teacher_token_secret is not None:
        return OctKey.import_key(settings.teacher_token_secret.get_secret_value())
    if algorithm == "RS256" and settings.teacher_token_jwks_url:
        kid = header.get("kid")
        return await context.jwks.key_set(settings.teacher_token_jwks_url, kid)
    raise _unauthorized(f"teacher tokens signed with {algorithm!r} are not accepted here")


async def verify_teacher_token(context: AppContext, token: str) -> Caller:
    settings = context.settings
    try:
        key = await _teacher_keys(context, token)
        decoded = jwt.decode(token, key, algorithms=list(TEACHER_TOKEN_ALGORITHMS))
        registry = jwt.JWTClaimsRegistry(
            now=int(context.clock().timestamp()),
            leeway=TEACHER_TOKEN_LEEWAY_SECONDS,
            sub={"essential": True},
            exp={"essential": True},
            aud={"essential": True, "value": settings.teacher_token_audience},
        )
        registry.validate(decoded.claims)
    except JwksUnavailableError as exc:
        # The caller is not authenticated yet: no URL, no upstream error (JwksCache logs them).
        raise ProblemError(
            503,
            "teacher_keys_unavailable",
            "teacher tokens cannot be verified right now; try again shortly",
        ) from exc
    except ExpiredTokenError as exc:
        raise ProblemError(401, "token_expired", "the teacher token has expired") from exc
    except (JoseError, ValueError) as exc:
        raise ProblemError(401, "token_invalid", f"the teacher token is not valid: {exc}") from exc
    teacher_id = str(decoded.claims["sub"])
    return Caller("teacher", teacher_id, frozenset({"teacher"}), teacher_id=teacher_id)


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


async def authenticate(
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _unauthorized("send credentials as 'Authorization: Bearer <key or token>'")
    presented = credentials.credentials
    caller = match_api_key(context.settings, presented)
    if caller is not None:
        return caller
    if _looks_like_jwt(presented):
        return await verify_teacher_token(context, presented)
    raise _unauthorized("the API key is not valid")


AuthenticatedCaller = Annotated[Caller, Depends(authenticate)]


def _require(caller: Caller, scope: Scope) -> Caller:
    if caller.kind != "api_key" or scope not in caller.scopes:
        raise ProblemError(403, "insufficient_scope", f"this endpoint needs the {scope!r} scope")
    return caller


def _scope_checker(scope: Scope) -> Callable[[Caller], Awaitable[Caller]]:
    async def dependency(caller: AuthenticatedCaller) -> Caller:
        return _require(caller, scope)

    return dependency


async def caller_with_scope(request: Request, context: AppContext, scope: Scope) -> Caller:
    """What `Depends(_scope_checker(scope))` answers, as a plain call: for the intake's hot
    endpoint, where FastAPI's resolution of the dependency chain costs more than the check.
    Declare `openapi_extra=BEARER_SECURITY` on such a route so the document still says so."""
    credentials = await bearer_scheme(request)
    return _require(await authenticate(context, credentials), scope)


BEARER_SECURITY: dict[str, Any] = {"security": [{bearer_scheme.scheme_name: []}]}


AdminCaller = Annotated[Caller, Depends(_scope_checker("admin"))]
EventsCaller = Annotated[Caller, Depends(_scope_checker("events"))]


@dataclass(frozen=True)
class TeacherActor:
    """A teacher acting, directly or through a `passback` key acting for them."""

    teacher_id: str | None
    caller: Caller

    @property
    def is_admin(self) -> bool:
        return self.caller.kind == "api_key" and "admin" in self.caller.scopes


async def teacher_actor(request: Request, caller: AuthenticatedCaller) -> TeacherActor:
    if caller.kind == "teacher":
        return TeacherActor(caller.teacher_id, caller)
    if "passback" in caller.scopes:
        acting = request.headers.get(ACTING_TEACHER_HEADER, "").strip()
        if not acting:
            raise ProblemError(
                422,
                "acting_teacher_required",
                f"a 'passback' key must name the teacher it acts for in {ACTING_TEACHER_HEADER}",
            )
        return TeacherActor(acting, caller)
    raise ProblemError(
        403, "insufficient_scope", "this endpoint needs a teacher token or the 'passback' scope"
    )


Teacher = Annotated[TeacherActor, Depends(teacher_actor)]
