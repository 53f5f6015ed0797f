"""How a training run ends early: a failure a user can act on, or a cancel."""

from __future__ import annotations

from worker.jobs import JobError


class TrainingError(JobError):
    """A training failure the user can act on."""


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
