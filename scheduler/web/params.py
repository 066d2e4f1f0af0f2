"""Query parameters shared by the API and the page: dates, the opaque cursor, the search filter."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, get_origin

from pydantic import BaseModel, Field, ValidationError, WithJsonSchema
from starlette.datastructures import QueryParams

from storage import queries
from storage.queries import MAX_LIMIT, SearchFilter

MAX_ID = 2**63 - 1


class BadParameter(ValueError):
    """A parameter that cannot be used; answered with 422 and this reason (schemas.Error)."""

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
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00 is before the first UTC moment
        raise BadParameter(name, f"{value.strip()!r} is out of range") from None


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
        return moment.astimezone(UTC), item_id
    except (ValueError, TypeError, OverflowError, UnicodeDecodeError):
        raise BadParameter("cursor", "not a cursor returned by this API") from None


def _clean(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(v.strip() for v in values if v and v.strip())


def _text(*examples: str) -> WithJsonSchema:
    """The schema of an optional string parameter: a plain string (a URL has no null)."""
    return WithJsonSchema({"type": "string", **({"examples": list(examples)} if examples else {})})


Text = Annotated[str | None, _text()]
FullText = Annotated[str | None, _text("СВМДА", '"мерам доверия" -ШОС', "CICA OR СВМДА")]
Since = Annotated[str | None, _text("2025-02-04", "2025-02-04T09:30:00+03:00")]
Until = Annotated[str | None, _text("2025-02-28", "2025-02-04T18:00:00Z")]
WHEN = ("ISO 8601 date (2025-02-04) or date-time (2025-02-04T09:30:00+03:00; without an offset it is "
        "UTC)")


class ItemQuery(BaseModel):
    """The query parameters of GET /api/items and of the search page at /, with their
    documentation. A new parameter is a field here and its use in :func:`build_search`."""

    q: FullText = Field(default=None, description='Full text: words, "phrases", OR, -word (excludes)')
    org: list[str] = Field(default_factory=list, description="Organisation id; repeat for any of several")
    source: list[str] = Field(default_factory=list, description="Source id; repeat for any of several")
    since: Since = Field(default=None, description=f"Items at or after this {WHEN}")
    until: Until = Field(default=None, description=f"Items at or before this {WHEN}; a date means its end")
    limit: int = Field(default=50, ge=1, le=MAX_LIMIT, description=f"Items per page, 1 to {MAX_LIMIT}")
    cursor: Text = Field(default=None, description="Opaque: the `next_cursor` of the previous page, passed back "
                                                  "unchanged (with the same other parameters)")
    edited_since: Since = Field(default=None, description=f"Only items with a new version (an edit, a removal) at or "
                                                          f"after this {WHEN}")

    @classmethod
    def from_url(cls, params: QueryParams) -> ItemQuery:
        """The query from a URL's parameters, as FastAPI reads them for the API (the last value
        of a single parameter, every value of a list; an empty value is absent): for the page.
        BadParameter names the first parameter that is wrong."""
        given: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            values = [v for v in params.getlist(name) if v != ""]
            if values:
                given[name] = values if get_origin(info.annotation) is list else values[-1]
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise BadParameter(str(error["loc"][0]), error["msg"]) from None


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


def build_search(query: ItemQuery, *, matched_only: bool = False, edited_days: str | None = None) -> Search:
    """Validate what the parameters mean; raises BadParameter with the first problem found.
    ``query.edited_since`` (an ISO date or time) or, for the page, ``edited_days`` (N days
    back) keep the items with a new version (an edit, a removal) since then."""
    orgs, sources = _clean(query.org), _clean(query.source)
    edited = parse_when("edited_since", query.edited_since)
    if edited is None and edited_days is not None and edited_days.strip():
        edited = datetime.now(UTC) - timedelta(days=parse_days("edited", edited_days))
    flt = SearchFilter(
        query=(query.q or "").strip() or None, organisations=orgs, sources=sources,
        since=parse_when("since", query.since), until=parse_when("until", query.until, end_of_day=True),
        limit=query.limit, before=decode_cursor(query.cursor), matched_only=matched_only,
        edited_since=edited)
    if flt.since and flt.until and flt.since > flt.until:
        raise BadParameter("since", "is after until")
    return Search(q=(query.q or "").strip(), orgs=orgs, sources=sources, since=(query.since or "").strip(),
                  until=(query.until or "").strip(), limit=flt.limit, cursor=(query.cursor or "").strip(),
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
