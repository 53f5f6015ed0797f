"""The sweep's rule for trainings: a dead worker's job runs again, a lost message is sent again.

- `preparing`/`training`/`assessing` with a lease older than `training_lease_s`: the worker died
  (killed, out of memory, machine lost). The lease is released and the job sent again; the
  next worker resumes it from the latest checkpoint. After `training_max_attempts` dead
  workers it fails with `worker_lost` instead.
- `queued`, or running with no lease (handed back by a worker that shut down): sent again once
  it has waited `requeue_after_s` since it was last sent (a message lost on the way).
- `queued` and awaiting its photos (no message was ever sent): once its subject has no photo
  pending, the subject is reviewed again, which starts or fails it (`app.trainings.start`); this
  covers a worker lost between the last analysis and that hook.
Each write is conditional on the lease the sweep saw, so a worker that renewed it meanwhile,
or a cancel, always wins.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from app.core.db import session_factory
from app.core.queue import TRAIN_MODEL, enqueue
from app.core.tx import after_commit
from app.db import RUNNING_TRAINING, Photo, PhotoStatus, Training, TrainingStatus
from app.db.base import utcnow
from app.notify.outbox import training_ended
from worker.analysis.tasks import review_when_complete
from worker.housekeeping.registry import Sweep, rule


def worker_lost(times: int) -> dict[str, str]:
    return {
        "code": "worker_lost",
        "message": f"The worker running this training stopped {times} times before it could finish "
        "(killed, out of memory, or its machine was lost).",
        "hint": "Start the training again. If it keeps happening, try a lower resolution or rank (less GPU memory), "
        "and ask the operator to check the GPU workers' logs.",
    }


@rule("trainings")
def recover_trainings(session: Session, sweep: Sweep) -> Counter[str]:
    """Hand on or fail the trainings of dead workers; send again the ones whose message was lost."""
    settings = sweep.settings
    stale = sweep.ago(settings.training_lease_s)
    counts: Counter[str] = Counter()

    dead = session.execute(
        select(Training.id, Training.worker_token, Training.lost_workers).where(
            Training.status.in_(RUNNING_TRAINING), Training.worker_token.is_not(None), Training.heartbeat_at < stale
        )
    ).all()
    for row in dead:
        lost = row.lost_workers + 1
        same_lease = (
            update(Training)
            .where(Training.id == row.id, Training.worker_token == row.worker_token, Training.heartbeat_at < stale)
            .where(Training.status.in_(RUNNING_TRAINING))
        )
        if lost >= settings.training_max_attempts:
            values = {"status": TrainingStatus.failed, "error": worker_lost(lost), "finished_at": utcnow()}
            if session.execute(same_lease.values(worker_token=None, lost_workers=lost, **values)).rowcount:
                counts["failed"] += 1
                training_ended(session, session.get(Training, row.id), settings)  # the email and webhook
            continue
        released = same_lease.values(
            worker_token=None, heartbeat_at=None, lost_workers=lost, dispatched_at=sweep.now, resends=0
        )
        if session.execute(released).rowcount:
            enqueue(session, TRAIN_MODEL, str(row.id))
            counts["lost_worker"] += 1

    waiting = session.execute(
        select(Training.id, Training.created_at, Training.dispatched_at, Training.resends)
        .where(
            or_(
                Training.status == TrainingStatus.queued,
                Training.status.in_(RUNNING_TRAINING) & Training.worker_token.is_(None),
            )
        )
        .where(Training.awaiting_photos.is_(False))  # never sent: see _check_awaiting
    ).all()
    for row in waiting:
        if not sweep.due(created=row.created_at, dispatched=row.dispatched_at, resends=row.resends):
            continue
        still = (
            update(Training)
            .where(Training.id == row.id, Training.worker_token.is_(None))
            .where(Training.status.in_((TrainingStatus.queued, *RUNNING_TRAINING)))
        )
        if session.execute(still.values(dispatched_at=sweep.now, resends=Training.resends + 1)).rowcount:
            enqueue(session, TRAIN_MODEL, str(row.id))
            counts["resent"] += 1
    counts.update(_check_awaiting(session, sweep))
    return counts


def _check_awaiting(session: Session, sweep: Sweep) -> Counter[str]:
    """Review again the subjects whose photos are all analysed while a training still waits for them."""
    counts: Counter[str] = Counter()
    rows = session.execute(
        select(Training.id, Training.subject_id, Training.created_at, Training.dispatched_at, Training.resends).where(
            Training.status == TrainingStatus.queued, Training.awaiting_photos.is_(True)
        )
    ).all()
    subjects = set()
    for row in rows:
        if not sweep.due(created=row.created_at, dispatched=row.dispatched_at, resends=row.resends):
            continue
        pending = session.scalar(
            select(func.count()).where(Photo.subject_id == row.subject_id, Photo.status == PhotoStatus.pending)
        )
        if pending:
            continue  # the last analysis will run the hook
        noted = (
            update(Training)
            .where(Training.id == row.id, Training.awaiting_photos.is_(True), Training.status == TrainingStatus.queued)
            .values(dispatched_at=sweep.now, resends=Training.resends + 1)
        )
        if session.execute(noted).rowcount:
            subjects.add(row.subject_id)
            counts["awaiting_checked"] += 1
    if subjects:
        sessions, settings = session_factory(sweep.settings), sweep.settings

        def review() -> None:
            for subject_id in subjects:
                review_when_complete(subject_id, sessions=sessions, settings=settings)

        after_commit(session, review)
    return counts
