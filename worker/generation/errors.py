"""How a generation ends early: a failure the user can act on (the training's `TrainingError` pattern)."""

from __future__ import annotations


class GenerationError(Exception):
    """A failure with a stable code, a message and a hint; never a traceback for the user."""

    def __init__(self, code: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint

    def as_dict(self) -> dict[str, str]:
        """The error as the job row and the API report it."""
        return {"code": self.code, "message": self.message, "hint": self.hint}
