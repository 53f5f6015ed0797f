"""`photos.analyze`: analyse a stored photo, record the result, and review the subject once all are in.

The row is the truth: the status moves from `pending` only through a conditional update,
so a redelivered or duplicated message finds nothing left to do. When the last pending
photo of a subject is done, the subject review judges the photos together (same person,
duplicates, selection); see `app.photos.review`.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import numpy as np
from celery import shared_task
from PIL import Image
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import session_factory, session_scope
from app.core.queue import ANALYZE_PHOTO
from app.core.settings import Settings, get_settings
from app.core.storage import ObjectNotFound, Storage, get_storage, photo_key
from app.db import Photo, PhotoStatus, Subject
from app.db.base import utcnow
from app.photos.reasons import verdict
from app.photos.service import lock_subject, review_subject
from worker.analysis.pipeline import Analysis, analyze_image

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


def _values(result: Analysis) -> dict[str, Any]:
    return {
        "status": PhotoStatus.analyzed,
        "error": None,
        "format": result.format,
        "width": result.width,
        "height": result.height,
        "has_thumb": True,
        "has_crop": result.crop is not None,
        "face_count": result.face_count,
        "faces": result.faces,
        "face_index": result.face_index,
        "encodings": result.encodings.astype(np.float32).tobytes() if result.encodings is not None else None,
        "face_box": result.face_box,
        "pose": result.pose,
        "shot": result.shot,
        "sharpness": result.sharpness,
        "brightness": result.brightness,
        "quality": result.quality,
        "reasons": result.reasons,
        "verdict": verdict(result.reasons),
        "signature": result.signature,
        "phash": result.phash,
        "crop_box": result.crop_box,
        "square_box": result.square_box,
        "auto_caption": result.auto_caption,
        # Set by the subject review once every photo is in.
        "identity_distance": None,
        "duplicate_of": None,
        "selected": False,
    }


def analyze_photo(photo_id: uuid.UUID, *, sessions: sessionmaker[Session], storage: Storage, settings: Settings) -> str:
    """Analyse one photo; returns the status it ended in (or why nothing was done)."""
    with session_scope(sessions) as session:
        photo = session.scalar(select(Photo).where(Photo.id == photo_id))
        if photo is None:
            return "gone"  # deleted before we got to it
        if photo.status != PhotoStatus.pending:
            return f"already {photo.status}"
        subject = session.get(Subject, photo.subject_id)
        class_word = subject.class_word if subject else "person"
        identity = np.frombuffer(subject.identity, dtype=np.float32) if subject and subject.identity else None
        face_index = photo.face_index  # set when the subject review asked for another face
        subject_id = photo.subject_id

        def key(variant: str, ext: str) -> str:
            return photo_key(photo.user_id, photo.subject_id, photo.id, variant, ext)

        original, thumb_key, crop_key = key("original", photo.stored_ext), key("thumb", "jpg"), key("crop", "jpg")
        session.execute(update(Photo).where(Photo.id == photo_id).values(analysis_attempts=Photo.analysis_attempts + 1))

    try:
        result = analyze_image(
            storage.get(original),
            class_word=class_word,
            identity=identity,
            face_index=face_index,
            thumb_size=settings.thumb_size,
        )
        storage.put(thumb_key, result.thumb, content_type="image/jpeg")
        if result.crop is not None:
            storage.put(crop_key, result.crop, content_type="image/jpeg")
        values = _values(result)
    except ObjectNotFound:
        values = {"status": PhotoStatus.failed, "error": "The stored image is missing; upload the photo again."}
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        values = {"status": PhotoStatus.failed, "error": f"The stored image could not be read ({exc})."}

    with session_scope(sessions) as session:
        done = session.execute(
            update(Photo)
            .where(Photo.id == photo_id, Photo.status == PhotoStatus.pending)
            .values(analyzed_at=utcnow(), **values)
        )
        if done.rowcount == 0:
            if session.get(Photo, photo_id) is None:  # deleted while we worked: leave no files behind
                for key in (thumb_key, crop_key):
                    storage.delete(key)
                return "gone"
            return "superseded"
    review_when_complete(subject_id, sessions=sessions, settings=settings)
    return str(values["status"])


def review_when_complete(subject_id: uuid.UUID, *, sessions: sessionmaker[Session], settings: Settings) -> bool:
    """Review the subject if none of its photos is still waiting for analysis."""
    with session_scope(sessions) as session:
        lock_subject(session, subject_id)  # count and review under one lock: the last one in reviews
        waiting = session.scalar(
            select(func.count()).where(Photo.subject_id == subject_id, Photo.status == PhotoStatus.pending)
        )
        if waiting:
            return False
        sent_back = review_subject(session, subject_id=subject_id, settings=settings)
        log.info("subject %s reviewed (%d photo(s) sent back for another face)", subject_id, sent_back)
    return True


@shared_task(
    name=ANALYZE_PHOTO,
    bind=True,
    acks_late=True,
    autoretry_for=(ConnectionError, TimeoutError),
    retry_backoff=True,
    max_retries=MAX_ATTEMPTS,
    soft_time_limit=120,
    time_limit=180,
)
def analyze_photo_task(self, photo_id: str) -> str:  # noqa: ANN001
    """Celery entry point: ids in, never objects."""
    outcome = analyze_photo(
        uuid.UUID(photo_id), sessions=session_factory(), storage=get_storage(), settings=get_settings()
    )
    log.info("photos.analyze %s: %s", photo_id, outcome)
    return outcome
