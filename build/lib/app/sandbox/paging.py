"""Canvas's API pagination: ``page``/``per_page`` (or AGS's ``limit``) and the Link header."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar
from urllib.parse import urlencode

DEFAULT_PER_PAGE = 10
MAX_PER_PAGE = 50
_DROPPED = frozenset({"access_token", "page", "per_page"})

T = TypeVar("T")


def _positive_int(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    number = int(value)
    return number if number > 0 else None


def paginate(items: Sequence[T], base_url: str, query: Mapping[str, str]) -> tuple[list[T], str]:
    """One page of `items` and its Link header.

    `limit` sets the page size unclamped; otherwise `per_page` (default 10, at most 50).
    Every link keeps the other query parameters and drops `access_token`.
    """
    limit = _positive_int(query.get("limit"))
    per_page = limit or min(_positive_int(query.get("per_page")) or DEFAULT_PER_PAGE, MAX_PER_PAGE)
    page = _positive_int(query.get("page")) or 1
    last = max(1, -(-len(items) // per_page))
    kept = [(name, value) for name, value in query.items() if name not in _DROPPED]

    def link(number: int, rel: str) -> str:
        params = urlencode([*kept, ("page", str(number)), ("per_page", str(per_page))])
        return f'<{base_url}?{params}>; rel="{rel}"'

    links = [link(page, "current")]
    if page < last:
        links.append(link(page + 1, "next"))
    if page > 1:
        links.append(link(page - 1, "prev"))
    links.append(link(1, "first"))
    links.append(link(last, "last"))
    start = (page - 1) * per_page
    return list(items[start : start + per_page]), ",".join(links)
