"""Access: the Bearer token for the API, an HttpOnly session cookie for the page."""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "newsmon_session"
OPEN_PATHS = ("/healthz", "/login", "/static/", "/docs/")  # /docs/: Swagger UI's own files


def cookie_value(token: str) -> str:
    """What the cookie holds: a MAC derived from the token, never the token itself."""
    return hmac.new(token.encode(), b"newsmon web session", hashlib.sha256).hexdigest()


def token_ok(token: str | None, given: str) -> bool:
    return token is not None and hmac.compare_digest(token.encode(), given.encode())


def authorised(request: Request, token: str) -> bool:
    """A valid `Authorization: Bearer` header or session cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and token_ok(token, value.strip()):
        return True
    cookie = request.cookies.get(COOKIE, "")
    return hmac.compare_digest(cookie.encode(), cookie_value(token).encode())


def is_open(path: str) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in OPEN_PATHS)


def wants_html(request: Request) -> bool:
    path = request.url.path
    return request.method == "GET" and (path in ("/", "/docs") or path.startswith("/items/"))


def safe_next(value: str | None) -> str:
    """A same-site path to go back to after logging in (no open redirects)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def set_cookie(response: Response, token: str, *, secure: bool) -> None:
    response.set_cookie(COOKIE, cookie_value(token), httponly=True, samesite="strict", secure=secure,
                        max_age=30 * 24 * 3600, path="/")


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
