"""Errors as answers: every failure is `{"error", "type", "field", "hint"}` with `isola.errors.http_status`.

Request bodies that do not fit their model become `InvalidSpecError`s naming the field (`resources.vcpus`),
so a client gets one shape of error whichever layer refused. Anything that is not an `IsolaError` is a bug in
isolad: still a JSON answer (500), with the traceback in the daemon's log, never in the client's face.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from isola.errors import InvalidSpecError, IsolaError, NotFoundError, UsageError, http_status

log = logging.getLogger("isolad")

_MESSAGES = {"missing": "is required", "extra_forbidden": "unknown field"}


def error_body(err: IsolaError) -> dict[str, Any]:
    return {
        "error": err.message,
        "type": type(err).__name__,
        "field": getattr(err, "field", None),
        "hint": err.hint,
    }


def answer(err: IsolaError) -> JSONResponse:
    return JSONResponse(error_body(err), status_code=http_status(err))


def validation_error(exc: RequestValidationError) -> InvalidSpecError:
    """The first problem pydantic found, as an isola error naming its field (`body` left out)."""
    first = dict(exc.errors()[0])
    loc = list(first.get("loc", ()))
    where = str(loc[0]) if loc else "body"
    field = None
    for part in loc[1:] if where == "body" else loc[-1:]:
        field = f"{field}[{part}]" if isinstance(part, int) else f"{field}.{part}" if field else str(part)
    if first.get("type") == "json_invalid":
        return InvalidSpecError("the request body is not valid JSON")
    problem = _MESSAGES.get(str(first.get("type")), str(first.get("msg")))
    if where == "body" and len(loc) == 1:
        return InvalidSpecError(f"the request body {problem}" if problem == "is required" else f"body: {problem}")
    return InvalidSpecError(problem, field=field)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return answer(validation_error(exc))

    @app.exception_handler(IsolaError)
    async def refused(request: Request, exc: IsolaError) -> JSONResponse:
        return answer(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return answer(NotFoundError(f"no such endpoint: {request.method} {request.url.path}"))
        err = UsageError(str(exc.detail))
        return JSONResponse(error_body(err), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("isolad bug in %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": f"isolad bug: {exc!r}", "type": "InternalError", "field": None, "hint": None}, status_code=500
        )
