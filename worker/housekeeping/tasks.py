"""The Celery entry point of the sweep; Celery beat sends it every LOOKALIKE_SWEEP_INTERVAL_S."""

from __future__ import annotations

from celery import shared_task

from app.core.db import session_factory
from app.core.queue import SWEEP
from app.core.settings import get_settings
from worker.housekeeping.sweep import HARD_LIMIT_S, SOFT_LIMIT_S, sweep


@shared_task(name=SWEEP, ignore_result=True, soft_time_limit=SOFT_LIMIT_S, time_limit=HARD_LIMIT_S)
def sweep_task() -> dict[str, dict[str, int]] | None:
    """Find stuck work of every kind and set it moving again."""
    return sweep(sessions=session_factory(), settings=get_settings())
