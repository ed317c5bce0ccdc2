"""JSON as Canvas renders it: Decimal numbers as floats (``10.0``), ``charset=utf-8``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from starlette.responses import Response

from app.sandbox.protocol import MEDIA_JSON


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dump_json(body: object) -> bytes:
    return json.dumps(body, default=_default, separators=(",", ":")).encode()


def canvas_json(
    body: object,
    *,
    status: int = 200,
    media_type: str = MEDIA_JSON,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        dump_json(body),
        status_code=status,
        headers=dict(headers or {}),
        media_type=f"{media_type}; charset=utf-8",
    )


def decimal_text(value: Decimal) -> str:
    """An exact, plain decimal string: ``Decimal("8.30")`` → ``"8.3"``, never exponent form."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def compact_dict(values: Mapping[str, Any]) -> dict[str, Any]:
    """Drop null fields, as Canvas's serializers do."""
    return {key: value for key, value in values.items() if value is not None}
