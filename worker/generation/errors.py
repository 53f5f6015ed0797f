"""How a generation ends early: a failure the user can act on."""

from __future__ import annotations

from worker.jobs import JobError


class GenerationError(JobError):
    """A generation failure the user can act on (a LoRA that does not fit, a base that does not load...)."""
