"""The sweep's rule for generations: a dead worker's job runs again, a lost message is sent again.

- `running` with a heartbeat older than `generation_lease_s`: its worker died. The job goes back to
  `queued` and is sent again (a generation has no checkpoint: it starts over); after
  `training_max_attempts` claims it fails with `worker_lost` instead.
- `queued`: sent again once it has waited `requeue_after_s` since it was last sent.
Each write is conditional on what the sweep saw, so a live worker's renewal or a cancel wins.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.queue import GENERATE, enqueue
from app.db import Generation, GenerationStatus
from app.db.base import utcnow
from worker.housekeeping.registry import Sweep, rule


def worker_lost(times: int) -> dict[str, str]:
    return {
        "code": "worker_lost",
        "message": f"The worker making these images stopped {times} times before it could finish "
        "(killed, out of memory, or its machine was lost).",
        "hint": "Try again with fewer images or a smaller size; if it keeps happening, ask the operator to check "
        "the GPU workers' logs.",
    }


@rule("generations")
def recover_generations(session: Session, sweep: Sweep) -> Counter[str]:
    """Requeue or fail the generations of dead workers; send again the ones whose message was lost."""
    settings = sweep.settings
    stale = sweep.ago(settings.generation_lease_s)
    counts: Counter[str] = Counter()
    dead = session.execute(
        select(Generation.id, Generation.worker_token, Generation.attempts).where(
            Generation.status == GenerationStatus.running, Generation.heartbeat_at < stale
        )
    ).all()
    for row in dead:
        same_lease = update(Generation).where(
            Generation.id == row.id,
            Generation.status == GenerationStatus.running,
            Generation.worker_token == row.worker_token,
            Generation.heartbeat_at < stale,
        )
        if row.attempts >= settings.training_max_attempts:
            failed = same_lease.values(
                status=GenerationStatus.failed, error=worker_lost(row.attempts), finished_at=utcnow(), worker_token=None
            )
            counts["failed"] += session.execute(failed).rowcount
            continue
        requeued = same_lease.values(
            status=GenerationStatus.queued, worker_token=None, heartbeat_at=None, dispatched_at=sweep.now, resends=0
        )
        if session.execute(requeued).rowcount:
            enqueue(session, GENERATE, str(row.id))
            counts["lost_worker"] += 1

    waiting = session.execute(
        select(Generation.id, Generation.created_at, Generation.dispatched_at, Generation.resends).where(
            Generation.status == GenerationStatus.queued
        )
    ).all()
    for row in waiting:
        if not sweep.due(created=row.created_at, dispatched=row.dispatched_at, resends=row.resends):
            continue
        still = update(Generation).where(Generation.id == row.id, Generation.status == GenerationStatus.queued)
        if session.execute(still.values(dispatched_at=sweep.now, resends=Generation.resends + 1)).rowcount:
            enqueue(session, GENERATE, str(row.id))
            counts["resent"] += 1
    return counts
