"""One error hierarchy for users to act on; `app.core.http_errors` turns it into `{"error": {code, message, hint}}`."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """An error a user can act on. Services raise these, never HTTPException."""

    status = 400
    code = "bad_request"
    headers: dict[str, str] | None = None  # sent with the answer (e.g. Retry-After)

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        hint: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.hint = hint
        self.status = status or self.status
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "hint": self.hint}
        if self.details:
            error.update(self.details)
        return {"error": error}


class BadRequest(AppError):
    status = 400
    code = "bad_request"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"


class NotFound(AppError):
    status = 404
    code = "not_found"


class Conflict(AppError):
    status = 409
    code = "conflict"


class Unprocessable(AppError):
    status = 422
    code = "invalid_input"
