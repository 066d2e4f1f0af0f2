"""One error body for every API error: `{"detail": str, "parameter": str | null}` (schemas.Error),
whether FastAPI's validation, a parameter that parses but means nothing (BadParameter), an
unknown id or a missing token raised it; and the OpenAPI `responses` that document them."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from scheduler.web.params import BadParameter
from scheduler.web.schemas import Error

DESCRIPTIONS = {
    401: "The server has an `api_token` and the request has no valid `Authorization: Bearer` header",
    404: "Nothing has this id",
    422: "A parameter is wrong: `parameter` names it and `detail` says why",
}


def error_response(status: int, detail: str, parameter: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = Error(detail=detail, parameter=parameter).model_dump(mode="json")
    return JSONResponse(body, status_code=status, headers=headers)


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route that can answer these errors."""
    return {status: {"model": Error, "description": DESCRIPTIONS[status]} for status in statuses}


def _location(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """The parameter an error is about: ("query", "limit") → "limit"."""
    names = [str(part) for part in loc[1:] if isinstance(part, str)]
    return names[0] if names else None


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    error = exc.errors()[0]
    parameter = _location(error.get("loc", ()))
    reason = str(error.get("msg", "invalid"))
    return error_response(422, f"{parameter}: {reason}" if parameter else reason, parameter)


async def _bad_parameter(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BadParameter)
    return error_response(422, str(exc), exc.name)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), None, dict(exc.headers or {}))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(BadParameter, _bad_parameter)
    app.add_exception_handler(HTTPException, _http)
