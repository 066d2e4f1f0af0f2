"""Query parameters shared by the API and the page: dates, the opaque cursor, the search filter."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from storage import queries
from storage.queries import MAX_LIMIT, SearchFilter

MAX_ID = 2**63 - 1


class BadParameter(ValueError):
    """A query parameter that cannot be used; answered with 422 and this reason."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


def parse_when(name: str, value: str | None, *, end_of_day: bool = False) -> datetime | None:
    """An ISO date or date-time as UTC (see storage.queries.parse_when); None when empty."""
    if value is None or not value.strip():
        return None
    try:
        return queries.parse_when(value, end_of_day=end_of_day)
    except ValueError as exc:
        raise BadParameter(name, str(exc)) from None


def encode_cursor(position: tuple[datetime, int]) -> str:
    at, item_id = position
    raw = json.dumps([at.isoformat(), item_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str | None) -> tuple[datetime, int] | None:
    """The (sort_at, id) position a cursor encodes; BadParameter if it is not one of ours."""
    if value is None or not value.strip():
        return None
    try:
        raw = base64.urlsafe_b64decode(value.strip() + "=" * (-len(value.strip()) % 4))
        at, item_id = json.loads(raw)
        moment = datetime.fromisoformat(at)
        if (moment.tzinfo is None or not isinstance(item_id, int) or isinstance(item_id, bool)
                or not 0 <= item_id <= MAX_ID):
            raise ValueError
    except (ValueError, TypeError, UnicodeDecodeError):
        raise BadParameter("cursor", "not a cursor returned by this API") from None
    return moment.astimezone(UTC), item_id


def parse_limit(value: str | int | None, default: int = 50) -> int:
    if value is None or value == "":
        return default
    try:
        limit = int(value)
    except ValueError:
        raise BadParameter("limit", f"{value!r} is not an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadParameter("limit", f"must be between 1 and {MAX_LIMIT}")
    return limit


def _clean(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(v.strip() for v in values if v and v.strip())


@dataclass
class Search:
    """A validated search as given in the URL (for the API and the bookmarkable page)."""

    q: str = ""
    orgs: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    since: str = ""
    until: str = ""
    limit: int = 50
    cursor: str = ""
    edited: str = ""  # the page's "recently edited" view: days back, or an ISO date or time
    flt: SearchFilter = field(default_factory=SearchFilter)


def build_search(q: str | None, orgs: Sequence[str], sources: Sequence[str], since: str | None,
                 until: str | None, limit: str | int | None, cursor: str | None,
                 *, matched_only: bool = False, edited_since: str | None = None,
                 edited_days: str | None = None) -> Search:
    """Validate the raw parameters; raises BadParameter with the first problem found.
    ``edited_since`` (an ISO date or time) or ``edited_days`` (N days back) keep the items
    with a new version (an edit, a removal) since then."""
    orgs_t, sources_t = _clean(orgs), _clean(sources)
    edited = parse_when("edited_since", edited_since)
    if edited is None and edited_days is not None and edited_days.strip():
        edited = datetime.now(UTC) - timedelta(days=parse_days("edited", edited_days))
    flt = SearchFilter(
        query=(q or "").strip() or None, organisations=orgs_t, sources=sources_t,
        since=parse_when("since", since), until=parse_when("until", until, end_of_day=True),
        limit=parse_limit(limit), before=decode_cursor(cursor), matched_only=matched_only,
        edited_since=edited)
    if flt.since and flt.until and flt.since > flt.until:
        raise BadParameter("since", "is after until")
    return Search(q=(q or "").strip(), orgs=orgs_t, sources=sources_t, since=(since or "").strip(),
                  until=(until or "").strip(), limit=flt.limit, cursor=(cursor or "").strip(),
                  edited=(edited_days or "").strip(), flt=flt)


MAX_EDITED_DAYS = 366


def parse_days(name: str, value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise BadParameter(name, f"{value!r} is not a number of days") from None
    if not 1 <= days <= MAX_EDITED_DAYS:
        raise BadParameter(name, f"must be between 1 and {MAX_EDITED_DAYS} days")
    return days
