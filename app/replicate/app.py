"""The Replicate-compatible API as a sub-application mounted at /replicate.

A sub-application rather than a router, because Replicate's clients read errors as RFC 7807
problem details (`application/problem+json`, with `detail` shown to the user): its own exception
handlers answer that shape for everything under /replicate, unknown paths included, while the
native API keeps `{"error": {...}}`. It shares the main app's state (database, storage, settings).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import State
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__
from app.core import docs
from app.core.errors import AppError
from app.core.redact import redact
from app.replicate.router import router

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"


def create_replicate_app(state: State) -> FastAPI:
    """The sub-application; `state` is the main app's, so the request dependencies work unchanged."""
    sub = FastAPI(
        title="Lookalike: Replicate-compatible API",
        version=__version__,
        description="Point the `replicate` client at it: REPLICATE_BASE_URL=<this service>/replicate and "
        "REPLICATE_API_TOKEN=<a Lookalike API key>.",
        docs_url=None,  # app.core.docs serves them with local assets
        redoc_url=None,
    )
    docs.install(sub)
    sub.state = state
    install_problem_handlers(sub)
    sub.include_router(router)
    return sub


def problem(status: int, code: str, detail: str, hint: str | None = None, **extra: Any) -> JSONResponse:
    """An RFC 7807 problem: `detail` is what the client shows; `code` and `hint` are extension members."""
    body = {
        "type": f"urn:lookalike:error:{code}",
        "title": _phrase(status),
        "status": status,
        "detail": redact(detail),  # it may echo the request (a path, a name): never a key pasted into it
        "code": code,
        "hint": hint,
    }
    body |= {k: v for k, v in extra.items() if k not in body}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def install_problem_handlers(sub: FastAPI) -> None:
    """Every error under /replicate, ours or the framework's, as a problem document."""

    @sub.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        response = problem(exc.status, exc.code, exc.message, exc.hint, **(exc.details or {}))
        response.headers.update(exc.headers or {})
        return response

    @sub.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err.get("loc", ()) if part != "body")
            fields.append({"field": where, "message": err.get("msg", "invalid")})
        first = fields[0] if fields else {"field": "", "message": "invalid request"}
        detail = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        hint = "Check the request against /replicate/docs."
        return problem(422, "invalid_input", detail, hint, fields=fields)

    @sub.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        hint = None
        if exc.status_code in (404, 405):
            detail = f"{request.method} {request.url.path}: {detail.lower()}."
            hint = "See /replicate/docs for the endpoints this service answers."
        return problem(exc.status_code, code, detail, hint)

    @sub.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        hint = "Try again; if it persists, check the server log."
        return problem(500, "internal_error", "Something went wrong on our side.", hint)
