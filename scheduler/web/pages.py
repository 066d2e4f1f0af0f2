"""The server-rendered pages: the bookmarkable search at /, the item view and the login form."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from scheduler.web import templates
from scheduler.web.api import ItemId, run_search, sessions_of
from scheduler.web.auth import COOKIE, clear_cookie, safe_next, set_cookie, token_ok
from scheduler.web.params import BadParameter, ItemQuery, Search, build_search
from storage import stats
from storage.queries import get_item, source_status

router = APIRouter(include_in_schema=False)
CHART_DAYS, MAX_CHART_DAYS = 30, 366


def chart_days(session: Session, search: Search) -> list[str]:
    """The days the chart covers: the filter's range, else the 30 days up to the newest match."""
    end = search.flt.until or stats.newest_matched_at(session) or datetime.now(UTC)
    start = search.flt.since or end - timedelta(days=CHART_DAYS - 1)
    start = max(start, end - timedelta(days=MAX_CHART_DAYS - 1))
    first, last = start.date(), end.date()
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _context(session: Session, search: Search, show_all: bool) -> dict[str, Any]:
    found = run_search(session, search)
    days = chart_days(session, search)
    since = datetime.combine(datetime.fromisoformat(days[0]).date(), time.min, UTC)
    until = datetime.combine(datetime.fromisoformat(days[-1]).date(), time.max, UTC)
    heading = "Search results" if search.q or search.orgs or search.sources else "Newest matches"
    if search.edited:
        heading = f"Edited or removed in the last {search.edited} day{'' if search.edited == '1' else 's'}"
    return {
        "search": search, "show_all": show_all, "items": found["items"],
        "next_cursor": found["next_cursor"], "heading": heading, "days": days,
        "counts": stats.mentions_per_day(session, since, until, search.orgs, search.sources),
        "orgs": stats.known_organisations(session), "sources": stats.known_sources(session),
        "health": source_status(session, datetime.now(UTC)),
    }


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status)


@router.get("/")
def index(request: Request) -> Response:
    params = request.query_params
    show_all = params.get("all") == "1"
    error, status = None, 200
    try:
        search = build_search(ItemQuery.from_url(params), matched_only=not show_all,
                              edited_days=params.get("edited"))
    except BadParameter as exc:
        error, status = str(exc), 422
        plain = ItemQuery(q=params.get("q"), org=params.getlist("org"), source=params.getlist("source"))
        search = build_search(plain, matched_only=not show_all)
    with sessions_of(request)() as session:
        ctx = _context(session, search, show_all)
    ctx["error"], ctx["logout"] = error, bool(request.app.state.token)
    return _html(templates.index_page(ctx), status)


@router.get("/items/{item_id}")
def item_view(request: Request, item_id: ItemId) -> Response:
    with sessions_of(request)() as session:
        item = get_item(session, item_id, versions=True, story=True)
    if item is None:
        return _html(templates.error_page(404, f"no item {item_id}"), 404)
    return _html(templates.item_page(item, logout=bool(request.app.state.token)))


@router.get("/login")
def login_form(request: Request) -> Response:
    return _html(templates.login_page(safe_next(request.query_params.get("next")), False))


@router.post("/login")
async def login(request: Request) -> Response:
    raw = (await request.body())[:8192].decode("utf-8", "replace")
    form = {k: v[0] for k, v in parse_qs(raw).items()}
    target = safe_next(form.get("next"))
    if not token_ok(request.app.state.token, form.get("token", "")):
        return _html(templates.login_page(target, True), 401)
    response = RedirectResponse(target, status_code=303)
    set_cookie(response, request.app.state.token, secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    clear_cookie(response)
    return response


__all__ = ["COOKIE", "router"]
