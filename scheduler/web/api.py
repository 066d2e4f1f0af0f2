"""The JSON API: /api/items, /api/items/{id}, /api/stories/{id}, /api/status and /healthz."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from sqlalchemy.orm import Session, sessionmaker

from scheduler.daemon import source_rows
from scheduler.web.errors import documented
from scheduler.web.params import MAX_ID, ItemQuery, Search, build_search, encode_cursor
from scheduler.web.schemas import Health, ItemDetail, ItemPage, Status, Story
from storage.queries import get_item, search_items, status_dict, story_items, strip_cursor

router = APIRouter()
ItemId = Annotated[int, Path(ge=1, le=MAX_ID, description="An item id (`id` of an ITEM)")]
StoryId = Annotated[int, Path(ge=1, le=MAX_ID, description="A story id (`story_id` of an ITEM)")]


def _link(operation: str, parameter: str, pointer: str, description: str) -> dict[str, Any]:
    """An OpenAPI link: where a value of this answer is a parameter of another operation."""
    return {"operationId": operation, "parameters": {parameter: f"$response.body#{pointer}"},
            "description": description}


def _ok(description: str, **links: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": description, **({"links": links} if links else {})}}


def sessions_of(request: Request) -> sessionmaker[Session]:
    return request.app.state.sessions  # type: ignore[no-any-return]  # Starlette's State holds Any; build_app sets it


def run_search(session: Session, search: Search) -> dict[str, Any]:
    """A page of ITEMs and the cursor of the next page (None after the last one)."""
    items = search_items(session, search.flt)
    cursor = encode_cursor(items[-1]["_cursor"]) if len(items) == search.flt.limit else None
    return {"items": strip_cursor(items), "next_cursor": cursor}


@router.get("/healthz", tags=["ops"], operation_id="healthz", summary="Liveness", response_model=Health)
def healthz() -> dict[str, str]:
    """Liveness: answers without touching the database or needing the token."""
    return {"status": "ok"}


@router.get("/api/items", tags=["items"], operation_id="searchItems", summary="Search items",
            response_model=ItemPage,
            responses={**_ok("A page of items, newest first",
                             item=_link("getItem", "item_id", "/items/0/id", "The first item in full"),
                             story=_link("getStory", "story_id", "/items/0/story_id", "The first item's story")),
                       **documented(422)})
def api_items(request: Request, query: Annotated[ItemQuery, Query()]) -> dict[str, Any]:
    """Search the stored items, newest first, a page at a time: follow `next_cursor` (with the
    same other parameters) until it is null. Every parameter is optional."""
    search = build_search(query)
    with sessions_of(request)() as session:
        return run_search(session, search)


@router.get("/api/items/{item_id}", tags=["items"], operation_id="getItem", summary="One item",
            response_model=ItemDetail,
            responses={**_ok("The item with its text, versions and story",
                             story=_link("getStory", "story_id", "/story_id", "The item's story")),
                       **documented(404, 422)})
def api_item(request: Request, item_id: ItemId) -> dict[str, Any]:
    """One ITEM with its text, every version and its story's items."""
    with sessions_of(request)() as session:
        item = get_item(session, item_id, versions=True, story=True)
    if item is None:
        raise HTTPException(404, detail=f"no item {item_id}")
    item.setdefault("story", [])
    return item


@router.get("/api/stories/{story_id}", tags=["items"], operation_id="getStory", summary="One story",
            response_model=Story,
            responses={**_ok("The story's items, oldest first",
                             item=_link("getItem", "item_id", "/items/0/id", "The story's first item")),
                       **documented(404, 422)})
def api_story(request: Request, story_id: StoryId) -> dict[str, Any]:
    """The items of one story (the same news seen at several sources), oldest first."""
    with sessions_of(request)() as session:
        items = story_items(session, story_id)
    if not items:
        raise HTTPException(404, detail=f"no story {story_id}")
    return {"id": story_id, "items": items}


@router.get("/api/status", tags=["ops"], operation_id="getStatus", summary="Sources, workers, latency",
            response_model=Status)
def api_status(request: Request) -> dict[str, Any]:
    """Sources, workers and detection latency (as `newsmon status --format json`)."""
    configured = source_rows(request.app.state.config)
    with sessions_of(request)() as session:
        return status_dict(session, configured=configured)
