"""Every HTTP error in the one shape `{"error": {...}}`: ours (AppError) and the framework's.

The web half of `app.core.errors`, kept apart so that workers and the CLI never import FastAPI.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Route

from app.core.errors import AppError
from app.core.redact import redact

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, hint: str | None = None) -> JSONResponse:
    """A response in the error shape, for the places that have no AppError at hand."""
    return JSONResponse({"error": {"code": code, "message": message, "hint": hint}}, status_code=status)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def install_error_handlers(app: FastAPI) -> None:
    """Make every error, ours or the framework's, answer in the one shape."""

    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        headers.update(exc.headers or {})
        body = exc.body()
        body["error"]["message"] = redact(exc.message)  # it may echo the request: never a key pasted into it
        return JSONResponse(body, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI keeps the body it failed on; the request's stream is spent by now.
        raw = exc.body if isinstance(exc.body, (bytes, str)) else b""
        unreadable = _unreadable_body(request, exc.errors(), raw.encode() if isinstance(raw, str) else raw)
        if unreadable is not None:
            status, error = unreadable
            return JSONResponse({"error": error}, status_code=status)
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err.get("loc", ()) if part != "body")
            problems.append({"field": where, "message": err.get("msg", "invalid")})
        first = problems[0] if problems else {"field": "", "message": "invalid request"}
        message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        body = {
            "error": {
                "code": "invalid_input",
                "message": message,
                "hint": "Check the request against the API documentation at /docs.",
                "fields": problems,
            }
        }
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        hint = None
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette's `Allow` names only the first route that matched the path (one method each).
            allowed = allowed_methods(request.app.router.routes, request.url.path)
            headers["Allow"] = ", ".join(allowed)
            message, hint = f"{request.method} is not allowed here.", f"This path takes {', '.join(allowed)}."
        response = error_response(exc.status_code, code, message, hint)
        response.headers.update(headers)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(
            500,
            "internal_error",
            "Something went wrong on our side.",
            "Try again; if it persists, check the server log.",
        )


JSON_HINT = "Send the body as JSON with the header `Content-Type: application/json`."


def _unreadable_body(request: Request, errors: Sequence[Any], body: bytes) -> tuple[int, dict[str, Any]] | None:
    """The body as a whole could not be read as the JSON object the operation takes: say why, for a person.

    Pydantic reports a JSON syntax error as `{"loc": ["body", <character offset>]}`, and a body sent
    without `Content-Type: application/json` as "Input should be a valid dictionary": neither names
    what to fix.
    """
    if len(errors) != 1:
        return None
    err = errors[0]
    loc = tuple(err.get("loc", ()))
    if err.get("type") == "json_invalid" and loc[:1] == ("body",):
        offset = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0
        before = body[:offset].decode("utf-8", errors="replace")
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        reason = (err.get("ctx") or {}).get("error", "it is not valid JSON")
        return 400, {
            "code": "invalid_json",
            "message": f"The request body is not valid JSON: {reason[:1].lower()}{reason[1:]} "
            f"(line {line}, column {column}).",
            "hint": "Check the JSON near that place: quotes around names and strings, commas between items "
            "and none after the last, matching brackets.",
        }
    if loc == ("body",) and err.get("type") == "missing":
        return 422, {
            "code": "missing_body",
            "message": "This operation takes a JSON body, and none was sent.",
            "hint": JSON_HINT,
        }
    if loc == ("body",) and err.get("type") in ("model_attributes_type", "dict_type", "model_type"):
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            sent = f"`{content_type}`" if content_type else "no Content-Type"
            return 415, {
                "code": "unsupported_content_type",
                "message": f"This operation takes a JSON object, and the request was sent with {sent}.",
                "hint": JSON_HINT,
            }
        return 422, {
            "code": "invalid_input",
            "message": "The request body must be a JSON object.",
            "hint": 'Send an object such as {"name": ...}: see the operation in the API documentation at /docs.',
        }
    return None


def allowed_methods(routes: Sequence[BaseRoute], path: str) -> list[str]:
    """Every method some route takes at `path` (HEAD with GET, as Starlette answers it)."""
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(path):
            methods |= route.methods
    return sorted(methods)
