"""Parsing and printing times the way Canvas's scores controller does."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

_STRICT_ISO8601 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?$", re.IGNORECASE
)
_FRACTION = re.compile(r"\.(\d+)")


def _from_iso(text: str) -> datetime | None:
    # Python wants at most 6 fractional digits; Ruby takes any number.
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(3, "0"), text, count=1)
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def parse_time(raw: object, *, strict: bool) -> datetime | None:
    """A timezone-aware UTC time, or None when `raw` is not a time Canvas would accept.

    Strict ISO 8601 first; unless `strict`, then a lenient parse (``2024-01-15 10:00:00``,
    RFC 2822 dates). Times without a zone are UTC, Canvas's API time zone.
    """
    if not isinstance(raw, str) or not raw.strip():
        return None
    text = raw.strip()
    parsed = _from_iso(text) if _STRICT_ISO8601.match(text) else None
    if parsed is None and not strict:
        parsed = _from_iso(text)
        if parsed is None:
            try:
                parsed = parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                parsed = None
    if parsed is None:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def iso8601_ms(moment: datetime) -> str:
    """Rails' ``iso8601(3)`` in UTC: ``2024-04-16T18:54:36.736Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
