"""`photos.analyze`: analyse a stored photo, record the result, and review the subject once all are in.

The row is the truth: the status moves from `pending` only through a conditional update,
so a redelivered or duplicated message finds nothing left to do. When the last pending
photo of a subject is done, the subject review judges the photos together (same person,
duplicates, selection); see `app.photos.review`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
from botocore.exceptions import BotoCoreError
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from PIL import Image
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import session_factory, session_scope
from app.core.keys import photo_key
from app.core.queue import ANALYZE_PHOTO
from app.core.settings import Settings, get_settings
from app.core.storage import ObjectNotFound, Storage, get_storage
from app.db import Photo, PhotoStatus, Subject
from app.db.base import utcnow
from app.photos.reasons import REJECTED, reason, verdict
from app.subjects.review import lock_subject, review_subject
from app.trainings.start import start_awaiting
from worker.analysis.pipeline import Analysis, analyze_image

log = logging.getLogger(__name__)

# Errors of the database, storage or network, not of the photo: the task is retried.
TRANSIENT = (ConnectionError, TimeoutError, OperationalError, BotoCoreError)


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


def failure(detail: str) -> dict[str, Any]:
    """What a photo that cannot be analysed ends with: `failed`, rejected, and a reason a person can act on."""
    return {
        "status": PhotoStatus.failed,
        "error": detail,
        "verdict": REJECTED,
        "reasons": [reason("analysis_failed", detail=detail)],
        "selected": False,
    }


def crashed(attempts: int) -> dict[str, Any]:
    return failure(f"Analysing this photo stopped the worker {attempts} times, so we gave up on it.")


def analyze_photo(photo_id: uuid.UUID, *, sessions: sessionmaker[Session], storage: Storage, settings: Settings) -> str:
    """Analyse one photo; returns the status it ended in (or why nothing was done).

    The photo is claimed first (attempts + 1, the claim's time): a copy of the message that
    arrives while another worker analyses it does nothing, and a photo that has already used
    its attempts (each one killed its worker) fails instead of killing another.
    """
    now = utcnow()
    stale = now - timedelta(seconds=settings.analysis_time_limit_s)
    written: list[str] = []
    with session_scope(sessions) as session:
        claimed = session.execute(
            update(Photo)
            .where(Photo.id == photo_id, Photo.status == PhotoStatus.pending)
            .where(or_(Photo.analysis_started_at.is_(None), Photo.analysis_started_at < stale))
            .values(analysis_attempts=Photo.analysis_attempts + 1, analysis_started_at=now)
        ).rowcount
        photo = session.get(Photo, photo_id)
        if photo is None:
            return "gone"  # deleted before we got to it
        if not claimed:
            return f"already {photo.status}" if photo.status != PhotoStatus.pending else "being analysed elsewhere"
        if photo.analysis_attempts > settings.analysis_max_attempts:
            values = crashed(photo.analysis_attempts - 1)
        else:
            values = None
            subject = session.get(Subject, photo.subject_id)
            class_word = subject.class_word if subject else "person"
            identity = np.frombuffer(subject.identity, dtype=np.float32) if subject and subject.identity else None
            face_index = photo.face_index  # set when the subject review asked for another face

            def key(variant: str, ext: str) -> str:
                return photo_key(photo.user_id, photo.subject_id, photo.id, variant, ext)

            original, thumb_key, crop_key = key("original", photo.stored_ext), key("thumb", "jpg"), key("crop", "jpg")

    if values is None:
        try:
            result = analyze_image(
                storage.get(original),
                class_word=class_word,
                identity=identity,
                face_index=face_index,
                thumb_size=settings.thumb_size,
            )
            storage.put(thumb_key, result.thumb, content_type="image/jpeg")
            written.append(thumb_key)
            if result.crop is not None:
                storage.put(crop_key, result.crop, content_type="image/jpeg")
                written.append(crop_key)
            values = _values(result)
        except TRANSIENT:
            _release(photo_id, sessions)  # the task retries; the next delivery claims it again
            raise
        except ObjectNotFound:
            values = failure("The stored image is missing.")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            values = failure(f"The stored image could not be read ({exc}).")
        except SoftTimeLimitExceeded:
            values = failure(f"Analysing this photo took longer than {settings.analysis_time_limit_s:.0f} seconds.")
        except Exception:  # noqa: BLE001 - every photo ends analysed or failed, never pending for ever
            log.exception("analysis of photo %s failed", photo_id)
            values = failure("The analysis failed unexpectedly.")

    return record(photo_id, values, sessions=sessions, storage=storage, settings=settings, written=written)


def record(
    photo_id: uuid.UUID,
    values: dict[str, Any],
    *,
    sessions: sessionmaker[Session],
    storage: Storage,
    settings: Settings,
    written: Sequence[str] = (),
) -> str:
    """Write a pending photo's outcome, then review its subject if it was the last one pending."""
    with session_scope(sessions) as session:
        done = session.execute(
            update(Photo)
            .where(Photo.id == photo_id, Photo.status == PhotoStatus.pending)
            .values(analyzed_at=utcnow(), analysis_started_at=None, **values)
        )
        photo = session.get(Photo, photo_id)
        if photo is None:  # deleted while we worked: leave no files behind
            for name in written:
                storage.delete(name)
            return "gone"
        if done.rowcount == 0:
            return "superseded"
        subject_id = photo.subject_id
    review_when_complete(subject_id, sessions=sessions, settings=settings)
    return str(values["status"])


def _release(photo_id: uuid.UUID, sessions: sessionmaker[Session]) -> None:
    """Give the claim (and the attempt: the worker did not die) back, so that a retry takes it at once.

    Best effort: when the database is what failed, the sweep frees the stale claim later.
    """
    try:
        with session_scope(sessions) as session:
            session.execute(
                update(Photo)
                .where(Photo.id == photo_id, Photo.status == PhotoStatus.pending)
                .values(analysis_started_at=None, analysis_attempts=Photo.analysis_attempts - 1)
            )
    except Exception:  # noqa: BLE001 - the database may be what failed
        log.warning("could not release the claim on photo %s", photo_id, exc_info=True)


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
        if not sent_back:
            # In the review's transaction: a training that waited for these photos starts (or fails) with it.
            started = start_awaiting(session, subject_id=subject_id, settings=settings)
            if started:
                log.info("subject %s: %d training(s) that waited for its photos handled", subject_id, started)
    return True


# The time limits come from LOOKALIKE_ANALYSIS_TIME_LIMIT_S (worker.celery_app sets them).
@shared_task(name=ANALYZE_PHOTO, bind=True, acks_late=True, max_retries=3)
def analyze_photo_task(self, photo_id: str) -> str:  # noqa: ANN001
    """Celery entry point: ids in, never objects. Storage or database errors are retried, then the photo fails."""
    sessions, storage, settings = session_factory(), get_storage(), get_settings()
    try:
        outcome = analyze_photo(uuid.UUID(photo_id), sessions=sessions, storage=storage, settings=settings)
    except TRANSIENT as exc:
        if self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=2**self.request.retries) from None
        detail = f"The photo store or database was unavailable ({type(exc).__name__}) each time we tried."
        outcome = record(uuid.UUID(photo_id), failure(detail), sessions=sessions, storage=storage, settings=settings)
    log.info("photos.analyze %s: %s", photo_id, outcome)
    return outcome
