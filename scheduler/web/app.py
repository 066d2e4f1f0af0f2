"""The ASGI application: routes, security headers, token access, static files and /metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import quote

import fastapi_offline
from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import AppConfig
from scheduler.web import api, metrics, pages
from scheduler.web.auth import authorised, is_open, wants_html
from scheduler.web.errors import DESCRIPTIONS, error_response, install_error_handlers
from scheduler.web.schemas import Error

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
TAGS = [{"name": "items", "description": "The stored history: search, items, stories"},
        {"name": "ops", "description": "Health, status and metrics"}]
STATIC = {"style.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "docs.js": "text/javascript; charset=utf-8"}
# Swagger UI, from the fastapi-offline package (no CDN: the CSP allows only this server)
SWAGGER = {"swagger-ui.css": "text/css; charset=utf-8", "swagger-ui-bundle.js": "text/javascript; charset=utf-8"}
DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>newsmon API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script><script src="/static/docs.js"></script></body></html>"""

Next = Callable[[Request], Awaitable[Response]]


def _static_files() -> dict[str, bytes]:
    """The page's assets, read once from the package (a fixed list: nothing else is served)."""
    base = resources.files("scheduler.web")
    return {name: (base / name).read_bytes() for name in STATIC}


def _add_docs(app: FastAPI) -> None:
    """/docs: the API reference, Swagger UI over /openapi.json; its files are read when first asked."""
    swagger = resources.files(fastapi_offline) / "static"

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(DOCS_PAGE)

    @app.get("/docs/{name}", include_in_schema=False)
    def docs_asset(name: str) -> Response:
        if name not in SWAGGER:
            raise HTTPException(404, detail="not found")
        return Response((swagger / name).read_bytes(), media_type=SWAGGER[name],
                        headers={"Cache-Control": "max-age=86400"})


def _denied(request: Request) -> Response:
    if wants_html(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    return error_response(401, "missing or wrong Bearer token",
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

    @app.get("/metrics", tags=["ops"], operation_id="metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"description": "Prometheus text exposition format",
                              "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
    def prometheus() -> Response:
        """Prometheus text format, counted in the database at scrape time."""
        return Response(metrics.render(registry), media_type=CONTENT_TYPE_LATEST)


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document as this server behaves: with an api_token, every operation but
    /healthz needs the Bearer token and can answer 401."""
    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes, tags=TAGS)
            if app.state.token:
                _require_token(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    return document


def _require_token(schema: dict[str, Any]) -> None:
    schema.setdefault("components", {}).setdefault("securitySchemes", {})["token"] = {
        "type": "http", "scheme": "bearer", "description": "The `[server] api_token` of newsmon.toml"}
    unauthorised = {"description": DESCRIPTIONS[401],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    schema["components"].setdefault("schemas", {}).setdefault("Error", Error.model_json_schema())
    for path, operations in schema["paths"].items():
        if is_open(path):
            continue
        for operation in operations.values():
            operation["security"] = [{"token": []}]
            operation["responses"]["401"] = unauthorised


def create_app(config: AppConfig, sessions: sessionmaker[Session]) -> FastAPI:
    """The whole web application for this configuration and database."""
    app = FastAPI(title="newsmon", version="1", docs_url=None, redoc_url=None,
                  description="History of what sources publish about international organisations.")
    app.state.sessions = sessions
    app.state.token = config.server.api_token or None
    app.state.config = config
    app.openapi = _openapi(app)  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema
    install_error_handlers(app)
    _add_middleware(app)
    app.include_router(api.router)
    app.include_router(pages.router)
    _add_static_and_metrics(app, sessions)
    _add_docs(app)
    return app
