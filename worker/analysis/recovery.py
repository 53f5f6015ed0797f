"""The sweep's rule for photos: none stays `pending` for ever.

- A claim older than the analysis time limit belongs to a dead worker (a live one would have
  been killed by the limit): the photo is sent again, or fails once it has used its attempts.
- A photo never claimed (its message lost between commit and broker, or taken by a worker
  that was killed before it started) is sent again once it has waited `requeue_after_s`.
A subject whose last pending photo fails here is reviewed, so its report stops waiting.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.db import session_factory
from app.core.queue import ANALYZE_PHOTO, enqueue
from app.core.tx import after_commit
from app.db import Photo, PhotoStatus
from app.db.base import utcnow
from worker.analysis.tasks import crashed, review_when_complete
from worker.housekeeping.registry import Sweep, rule


@rule("photos")
def recover_photos(session: Session, sweep: Sweep) -> Counter[str]:
    """Send again or fail the pending photos whose worker or message was lost."""
    settings = sweep.settings
    stale = sweep.ago(settings.analysis_time_limit_s)
    counts: Counter[str] = Counter()
    failed_subjects = set()
    rows = session.execute(
        select(
            Photo.id,
            Photo.subject_id,
            Photo.analysis_attempts,
            Photo.analysis_started_at,
            Photo.created_at,
            Photo.dispatched_at,
            Photo.resends,
        ).where(Photo.status == PhotoStatus.pending)
    ).all()
    for row in rows:
        pending = update(Photo).where(Photo.id == row.id, Photo.status == PhotoStatus.pending)
        if row.analysis_started_at is not None:
            if row.analysis_started_at >= stale:
                continue  # being analysed now
            claimed = pending.where(Photo.analysis_started_at < stale)
            if row.analysis_attempts >= settings.analysis_max_attempts:
                values = crashed(row.analysis_attempts) | {"analyzed_at": utcnow(), "analysis_started_at": None}
                if session.execute(claimed.values(**values)).rowcount:
                    failed_subjects.add(row.subject_id)
                    counts["failed"] += 1
                continue
            released = claimed.values(analysis_started_at=None, dispatched_at=sweep.now, resends=0)
            if session.execute(released).rowcount:
                enqueue(session, ANALYZE_PHOTO, str(row.id))
                counts["lost_worker"] += 1
        elif sweep.due(created=row.created_at, dispatched=row.dispatched_at, resends=row.resends):
            unclaimed = pending.where(Photo.analysis_started_at.is_(None))
            if session.execute(unclaimed.values(dispatched_at=sweep.now, resends=Photo.resends + 1)).rowcount:
                enqueue(session, ANALYZE_PHOTO, str(row.id))
                counts["resent"] += 1
    if failed_subjects:
        sessions = session_factory(settings)

        def review() -> None:
            for subject_id in failed_subjects:
                review_when_complete(subject_id, sessions=sessions, settings=settings)

        after_commit(session, review)
    return counts
