"""Request parameters the way Rails builds them for Canvas.

The query string merged with the body: JSON for any ``json`` media type (numbers with a
fraction become exact `Decimal`s), form encoding, and nothing at all for other types.
Canvas does not reject a wrong Content-Type; an unreadable body just yields no parameters.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from app.sandbox.errors import UnexpectedError


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_body(body: bytes) -> dict[str, Any]:
    """A JSON object with `Decimal` fractions; raises ValueError for invalid JSON."""
    value = json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
    return value if isinstance(value, dict) else {}


async def read_params(request: Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    if not body.strip():
        return params
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if "json" in media_type:
        try:
            params.update(parse_json_body(body))
        except ValueError:
            raise UnexpectedError(400) from None
    elif media_type == "application/x-www-form-urlencoded":
        params.update(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    return params


def bearer_token(request: Request, params: dict[str, Any]) -> str | None:
    """``Authorization: Bearer <token>`` (case-sensitive), else an ``access_token`` param."""
    authorization = request.headers.get("authorization", "")
    if authorization.startswith("Bearer "):
        return authorization[len("Bearer ") :].strip() or None
    token = params.get("access_token")
    return token if isinstance(token, str) and token else None
