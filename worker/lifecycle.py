"""The worker's own shutdown, as long-running tasks see it.

Celery's warm shutdown (SIGTERM, or Ctrl-C on `lookalike worker`) stops taking messages and
waits for the running tasks to end; a training would run on for hours. The main process sets
an event that every pool process inherited when it was forked, and a training that sees it
saves a checkpoint and hands its job back at the next step. A worker that starts sends a sweep
at once, which sends the handed-back jobs again.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Event

from celery.signals import worker_init, worker_ready, worker_shutting_down

_stop: Event | None = None


@worker_init.connect
def _create(**_: object) -> None:
    # In the main process, before the pool forks its processes: they share this event.
    global _stop
    _stop = multiprocessing.get_context("fork").Event()


@worker_shutting_down.connect
def _set(**_: object) -> None:
    if _stop is not None:
        _stop.set()


@worker_ready.connect
def _sweep_now(**_: object) -> None:
    # A worker that starts picks up at once what a stopped one handed back, instead of a beat interval later.
    from app.core.queue import SWEEP, send

    send(SWEEP)


def stopping() -> bool:
    """True once this worker has begun to shut down."""
    return _stop is not None and _stop.is_set()
