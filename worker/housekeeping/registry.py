"""Where each job kind tells the sweep how to find its stuck work.

A rule is a function `(session, sweep) -> counts` registered under a name. It runs in its
own transaction; messages it sends with `app.core.queue.enqueue` leave after the commit.
Every status it writes is conditional (`UPDATE ... WHERE status = ...`), so it never
overwrites what a live worker or the user did meanwhile. A new stage adds one rule module
to `RULE_MODULES`; there is never a second sweeper.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from app.core.settings import Settings

# Each module registers its rules when imported.
RULE_MODULES = (
    "worker.analysis.recovery",
    "worker.training.recovery",
    "worker.generation.recovery",
    "worker.notify.recovery",
    "worker.housekeeping.retention",
    "worker.housekeeping.orphans",
)


# `dispatched_at` of a job known to have no message on its way (handed back by a worker that
# was shutting down): the next sweep sends it at once.
NO_MESSAGE = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Sweep:
    """What every rule needs: the sweep's clock and the settings."""

    now: datetime
    settings: Settings

    def ago(self, seconds: float) -> datetime:
        return self.now - timedelta(seconds=seconds)

    def due(self, *, created: datetime, dispatched: datetime | None, resends: int) -> bool:
        """Is a job waiting since `dispatched` (or `created`) due for another message?

        The first resend comes `requeue_after_s` after the wait began and each later one waits twice
        as long as the one before, so a long queue gets a handful of copies, not one per sweep.
        """
        waited = (self.now - (dispatched or created)).total_seconds()
        return waited >= self.settings.requeue_after_s * 2 ** min(resends, 16)


Rule = Callable[[Session, Sweep], Counter[str]]
RULES: dict[str, Rule] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    """Register a stuck-work rule under `name` (one per job kind)."""

    def register(fn: Rule) -> Rule:
        if name in RULES and RULES[name] is not fn:
            raise ValueError(f"a sweep rule named {name!r} is already registered")
        RULES[name] = fn
        return fn

    return register


def load_rules() -> dict[str, Rule]:
    for module in RULE_MODULES:
        importlib.import_module(module)
    return RULES
