"""The ASGI application: routes, security headers, token access, static files and /metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import AppConfig
from scheduler.web import api, metrics, pages
from scheduler.web.auth import authorised, is_open, wants_html

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
STATIC = {"style.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}

Next = Callable[[Request], Awaitable[Response]]


def _static_files() -> dict[str, bytes]:
    """The page's assets, read once from the package (a fixed list: nothing else is served)."""
    base = resources.files("scheduler.web")
    return {name: (base / name).read_bytes() for name in STATIC}


def _denied(request: Request) -> Response:
    if wants_html(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    return JSONResponse({"detail": "missing or wrong Bearer token"}, status_code=401,
                        headers={"WWW-Authenticate": 'Bearer realm="newsmon"'})


def _add_middleware(app: FastAPI) -> None:
    @app.middleware("http")
    async def guard(request: Request, call_next: Next) -> Response:
        token = app.state.token
        if token and not is_open(request.url.path) and not authorised(request, token):
            response = _denied(request)
        else:
            response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def _add_static_and_metrics(app: FastAPI, sessions: sessionmaker[Session]) -> None:
    files = _static_files()
    registry = metrics.make_registry(sessions)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in files:
            raise HTTPException(404, detail="not found")
        return Response(files[name], media_type=STATIC[name], headers={"Cache-Control": "max-age=3600"})

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def prometheus() -> Response:
        """Prometheus text format, counted in the database at scrape time."""
        return Response(metrics.render(registry), media_type=CONTENT_TYPE_LATEST)


def create_app(config: AppConfig, sessions: sessionmaker[Session]) -> FastAPI:
    """The whole web application for this configuration and database."""
    app = FastAPI(title="newsmon", version="1", docs_url=None, redoc_url=None,
                  description="History of what sources publish about international organisations.")
    app.state.sessions = sessions
    app.state.token = config.server.api_token or None
    app.state.config = config
    _add_middleware(app)
    app.include_router(api.router)
    app.include_router(pages.router)
    _add_static_and_metrics(app, sessions)
    return app
