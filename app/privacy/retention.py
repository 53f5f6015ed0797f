"""Retention: what a training leaves behind is kept `retention_days` after it ends, then deleted.

Deleted then: the training's cache and checkpoints (a succeeded or canceled run removes them at
once; a failed one keeps them until now), the uploaded zip a Replicate-style training was made
from, and, once it is the subject's latest training and none runs, the subject's photos that were
there when it started (rows with their face encodings, and the original, crop and thumbnail
objects). Photos uploaded since stay. The model (its LoRA files, samples and contact sheet) stays
until its owner deletes it. The training records when in `phases["purged"]`, which is also how the
sweep knows it is done.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.core.keys import file_key, photo_prefix, training_prefix
from app.core.settings import Settings
from app.core.storage import Storage
from app.core.tx import after_commit
from app.db import ACTIVE_TRAINING, Photo, Subject, Training, TrainingStatus, UploadedFile
from app.privacy.erase import training_input_files

ENDED = (TrainingStatus.succeeded, TrainingStatus.failed, TrainingStatus.canceled)
PURGED = "purged"  # the key in `Training.phases`
BATCH = 100  # trainings per sweep: a backlog is worked off over a few sweeps, each one short


def purge_expired(session: Session, *, now: datetime, settings: Settings, storage: Storage) -> Counter[str]:
    """Delete what trainings that ended more than `retention_days` before `now` no longer need."""
    cutoff = now - timedelta(days=settings.retention_days)
    ended_at = func.coalesce(Training.finished_at, Training.created_at)
    due = list(
        session.scalars(
            select(Training)
            .where(Training.status.in_(ENDED), ended_at < cutoff, Training.phases[PURGED].as_string().is_(None))
            .order_by(ended_at, Training.id)
            .limit(BATCH)
        )
    )
    counts: Counter[str] = Counter()
    keys: list[str] = []
    prefixes: list[str] = []
    for training in due:
        prefixes.append(training_prefix(training.user_id, training.id))
        keys += _purge_input_files(session, training)
        if _latest_and_idle(session, training):
            photos = _purge_photos(session, training)
            prefixes += photos
            counts["photos"] += len(photos)
        training.phases = {**(training.phases or {}), PURGED: now.isoformat()}
        counts["trainings"] += 1
    session.flush()

    def erase() -> None:
        for prefix in prefixes:
            storage.delete_prefix(prefix)
        for key in keys:
            storage.delete(key)

    after_commit(session, erase)
    return +counts


def _latest_and_idle(session: Session, training: Training) -> bool:
    """Is this the subject's latest training, with none of its trainings still to run?"""
    latest = session.scalar(
        select(Training.id)
        .where(Training.subject_id == training.subject_id)
        .order_by(Training.created_at.desc(), Training.id.desc())
        .limit(1)
    )
    active = session.scalar(
        select(func.count()).where(Training.subject_id == training.subject_id, Training.status.in_(ACTIVE_TRAINING))
    )
    return latest == training.id and not active


def _purge_photos(session: Session, training: Training) -> list[str]:
    """Delete the subject's photos that were there when the training started; returns their prefixes."""
    since = training.started_at or training.finished_at or training.created_at
    rows = session.execute(
        select(Photo.id, Photo.user_id, Photo.subject_id).where(
            Photo.subject_id == training.subject_id, Photo.created_at <= since
        )
    ).all()
    if rows:
        session.execute(delete(Photo).where(Photo.id.in_([r.id for r in rows])))
    remaining = session.scalar(select(func.count()).where(Photo.subject_id == training.subject_id))
    subject = session.get(Subject, training.subject_id)
    if subject is not None and not remaining:
        # The identity is the mean face encoding of those photos: biometric data, it goes with them.
        subject.identity = None
        subject.reviewed_at = None
    return [photo_prefix(r.user_id, r.subject_id, r.id) for r in rows]


def _purge_input_files(session: Session, training: Training) -> list[str]:
    ids: list[uuid.UUID] = training_input_files(training)
    if not ids:
        return []
    rows = session.execute(
        select(UploadedFile.id, UploadedFile.user_id).where(
            UploadedFile.user_id == training.user_id, UploadedFile.id.in_(ids)
        )
    ).all()
    if rows:
        session.execute(delete(UploadedFile).where(UploadedFile.id.in_([r.id for r in rows])))
    return [file_key(r.user_id, r.id) for r in rows]
