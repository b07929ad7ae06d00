"""The one place where Quire's errors become HTTP answers: JSON with a message and a hint, never a trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from core.errors import AccessDenied, BackendError, InvalidName, NotAuthenticated, NotFound, QuireError, TooLarge

log = logging.getLogger("quire.server")
STATUS = ((NotFound, 404), (AccessDenied, 403), (NotAuthenticated, 401), (TooLarge, 413), (InvalidName, 409),
          (BackendError, 502))


def status_of(exc: QuireError) -> int:
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 400)


def error_body(exc: QuireError) -> dict:
    return {"error": {"message": exc.message, "hint": exc.hint, "type": type(exc).__name__}}


def install(app: FastAPI) -> None:
    @app.exception_handler(QuireError)
    async def quire_error(request: Request, exc: QuireError) -> JSONResponse:
        return JSONResponse(error_body(exc), status_code=status_of(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:  # no such route, wrong method
        return JSONResponse({"error": {"message": str(exc.detail), "hint": "See /api/v1/openapi.json.",
                                       "type": "HTTPError"}}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = ", ".join(".".join(str(p) for p in e.get("loc", ())[1:]) or "body" for e in exc.errors())
        return JSONResponse({"error": {"message": f"The request is not what this endpoint takes ({fields}).",
                                       "hint": "See /api/v1/openapi.json for its schema.", "type": "BadRequest"}},
                            status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)  # the trace stays here
        return JSONResponse({"error": {"message": "Something went wrong on the server.",
                                       "hint": "It is logged there; try again, or tell its admin.",
                                       "type": "InternalError"}}, status_code=500)
