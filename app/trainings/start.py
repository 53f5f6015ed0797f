"""Starting the trainings that waited for their photos' analysis (`Training.awaiting_photos`).

A training created together with its photos (the Replicate-compatible API sends a zip) is queued
but not sent: its photos must be analysed and reviewed first. Once the subject has no photo
pending, the analysis worker (and, after a crash, the sweep) calls `start_awaiting`: each such
training is sent to a worker if the subject is ready to train, and fails with the report's
problems otherwise. Free of any web framework: the workers run it.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.core.queue import TRAIN_MODEL, enqueue
from app.core.settings import Settings
from app.db import Photo, PhotoStatus, Subject, Training, TrainingStatus
from app.db.base import utcnow
from app.notify import outbox
from app.subjects.report import build_report


def start_awaiting(session: Session, *, subject_id: uuid.UUID, settings: Settings) -> int:
    """Send or fail the subject's awaiting trainings once none of its photos is pending; how many were handled."""
    waiting = list(
        session.scalars(
            select(Training.id).where(
                Training.subject_id == subject_id,
                Training.awaiting_photos.is_(True),
                Training.status == TrainingStatus.queued,
            )
        )
    )
    subject = session.get(Subject, subject_id)
    if not waiting or subject is None:
        return 0
    pending = session.scalar(
        select(func.count()).where(Photo.subject_id == subject_id, Photo.status == PhotoStatus.pending)
    )
    if pending:
        return 0
    report = build_report(session, subject=subject, settings=settings)
    now = utcnow()
    handled = 0
    for training_id in waiting:
        # Conditional on still awaiting and queued: a cancel, or the other caller (hook or sweep), wins.
        still = update(Training).where(
            Training.id == training_id, Training.awaiting_photos.is_(True), Training.status == TrainingStatus.queued
        )
        if report.ready_to_train:
            # The sweep times a lost message from dispatched_at, not from the (older) creation.
            if session.execute(still.values(awaiting_photos=False, dispatched_at=now, resends=0)).rowcount:
                enqueue(session, TRAIN_MODEL, str(training_id))
                handled += 1
            continue
        error = {
            "code": "subject_not_ready",
            "message": "The photos are not ready to train: " + "; ".join(p.message for p in report.problems),
            "hint": f"Fix what GET /v1/subjects/{subject_id}/report lists under problems "
            "(or send a better set of photos), then start the training again.",
        }
        failed = still.values(awaiting_photos=False, status=TrainingStatus.failed, error=error, finished_at=now)
        if session.execute(failed).rowcount:
            training = session.get(Training, training_id)
            training.phases = {**(training.phases or {}), TrainingStatus.failed: now.isoformat()}
            outbox.training_ended(session, training, settings)
            handled += 1
    session.flush()
    return handled
