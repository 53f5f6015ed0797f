"""How a training run ends early: a failure a user can act on, or a cancel."""

from __future__ import annotations


class TrainingError(Exception):
    """A failure with a stable code, a message and a hint; never a traceback for the user."""

    def __init__(self, code: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class Canceled(Exception):  # noqa: N818 - a normal ending, not an error
    """The run was canceled; raised at the next progress report after the cancel."""

    def __init__(self, step: int) -> None:
        super().__init__(f"canceled at step {step}")
        self.step = step


class Interrupted(Exception):  # noqa: N818 - a normal ending, not an error
    """The worker is shutting down; the run saved a checkpoint at `step` and is to be resumed elsewhere."""

    def __init__(self, step: int) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step = step
