"""The JSON API: /api/items, /api/items/{id}, /api/stories/{id}, /api/status and /healthz."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from sqlalchemy.orm import Session, sessionmaker

from scheduler.web.params import MAX_ID, BadParameter, build_search, encode_cursor
from storage.queries import (
    MAX_LIMIT,
    get_item,
    latency_stats,
    search_items,
    source_status,
    story_items,
    strip_cursor,
    worker_status,
)

router = APIRouter()
ItemId = Annotated[int, Path(ge=1, le=MAX_ID)]


def sessions_of(request: Request) -> sessionmaker[Session]:
    return request.app.state.sessions  # type: ignore[no-any-return]


def status_dict(session: Session, now: datetime | None = None) -> dict[str, Any]:
    """The same object as `newsmon status --format json`."""
    now = now or datetime.now(UTC)
    return {"sources": source_status(session, now), "workers": worker_status(session),
            "latency": latency_stats(session)}


def run_search(session: Session, search: Any) -> dict[str, Any]:
    """A page of ITEMs and the cursor of the next page (None after the last one)."""
    items = search_items(session, search.flt)
    cursor = encode_cursor(items[-1]["_cursor"]) if len(items) == search.flt.limit else None
    return {"items": strip_cursor(items), "next_cursor": cursor}


@router.get("/healthz", tags=["ops"])
def healthz() -> dict[str, str]:
    """Liveness: answers without touching the database or needing the token."""
    return {"status": "ok"}


@router.get("/api/items", tags=["items"])
def api_items(
    request: Request,
    q: Annotated[str | None, Query(description="Full text: words, \"phrases\", OR, -word")] = None,
    org: Annotated[list[str], Query(description="Organisation id (repeatable)")] = [],  # noqa: B006
    source: Annotated[list[str], Query(description="Source id (repeatable)")] = [],  # noqa: B006
    since: Annotated[str | None, Query(description="ISO date or time (inclusive)")] = None,
    until: Annotated[str | None, Query(description="ISO date or time (a date means its end)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    edited_since: Annotated[str | None, Query(
        description="ISO date or time: only items with a new version (an edit, a removal) since")] = None,
) -> dict[str, Any]:
    """Items newest first, with an opaque cursor for the next page."""
    try:
        search = build_search(q, org, source, since, until, limit, cursor, edited_since=edited_since)
    except BadParameter as exc:
        raise HTTPException(422, detail=str(exc)) from None
    with sessions_of(request)() as session:
        return run_search(session, search)


@router.get("/api/items/{item_id}", tags=["items"])
def api_item(request: Request, item_id: ItemId) -> dict[str, Any]:
    """One ITEM with its text, every version and its story's items."""
    with sessions_of(request)() as session:
        item = get_item(session, item_id, versions=True, story=True)
    if item is None:
        raise HTTPException(404, detail=f"no item {item_id}")
    item.setdefault("story", [])
    return item


@router.get("/api/stories/{story_id}", tags=["items"])
def api_story(request: Request, story_id: ItemId) -> dict[str, Any]:
    """The items of one story (the same news seen at several sources), oldest first."""
    with sessions_of(request)() as session:
        items = story_items(session, story_id)
    if not items:
        raise HTTPException(404, detail=f"no story {story_id}")
    return {"id": story_id, "items": items}


@router.get("/api/status", tags=["ops"])
def api_status(request: Request) -> dict[str, Any]:
    """Sources, workers and detection latency (as `newsmon status --format json`)."""
    with sessions_of(request)() as session:
        return status_dict(session)
