"""The client-assertion JWT a tool signs to ask a platform for an access token (RFC 7523).

Signed RS256 with the tool's current key and its `kid`; `iss` = `sub` = the client id, `aud` =
the registration's token audience, a short life and a unique `jti`. joserfc is the JOSE
library of the Authlib project (authlib.jose is deprecated in its favour).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from joserfc import jwt

from app.lti.keys import ToolKey

ASSERTION_LIFETIME = timedelta(minutes=5)
ASSERTION_TYPE_JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def client_assertion(
    key: ToolKey,
    *,
    client_id: str,
    audience: str,
    now: datetime,
    lifetime: timedelta = ASSERTION_LIFETIME,
) -> str:
    """A freshly signed assertion; each call has its own `jti`."""
    issued_at = int(now.timestamp())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + int(lifetime.total_seconds()),
        "jti": uuid.uuid4().hex,
    }
    header = {"alg": "RS256", "typ": "JWT", "kid": key.kid}
    return jwt.encode(header, claims, key.key, algorithms=["RS256"])
