"""`photos.analyze`: measure a stored photo and record the result on its row.

The row is the truth: the status moves from `pending` only through a conditional update,
so a redelivered or duplicated message finds nothing left to do.
"""

from __future__ import annotations

import io
import logging
import uuid
from dataclasses import dataclass

from celery import shared_task
from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import session_factory, session_scope
from app.core.queue import ANALYZE_PHOTO
from app.core.settings import get_settings
from app.core.storage import ObjectNotFound, Storage, get_storage, photo_key
from app.db import Photo, PhotoStatus
from app.db.base import utcnow
from app.photos.ingest import make_thumbnail

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Measured:
    format: str
    width: int
    height: int
    thumb: bytes


def measure(data: bytes, *, thumb_size: int) -> Measured:
    """Format, size and thumbnail of a stored image (stored images are already upright)."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return Measured(img.format or "unknown", img.width, img.height, make_thumbnail(img, thumb_size))


def analyze_photo(
    photo_id: uuid.UUID, *, sessions: sessionmaker[Session], storage: Storage, thumb_size: int = 512
) -> str:
    """Analyse one photo; returns the status it ended in (or why nothing was done)."""
    with session_scope(sessions) as session:
        photo = session.scalar(select(Photo).where(Photo.id == photo_id))
        if photo is None:
            return "gone"  # deleted before we got to it
        if photo.status != PhotoStatus.pending:
            return f"already {photo.status}"
        key = photo_key(photo.user_id, photo.subject_id, photo.id, "original", photo.stored_ext)
        thumb_key = photo_key(photo.user_id, photo.subject_id, photo.id, "thumb", "jpg")
        session.execute(update(Photo).where(Photo.id == photo_id).values(analysis_attempts=Photo.analysis_attempts + 1))

    try:
        result = measure(storage.get(key), thumb_size=thumb_size)
        storage.put(thumb_key, result.thumb, content_type="image/jpeg")
        values = {
            "status": PhotoStatus.analyzed,
            "has_thumb": True,
            "format": result.format,
            "width": result.width,
            "height": result.height,
            "error": None,
        }
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
            return "superseded"
    return str(values["status"])


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
    settings = get_settings()
    outcome = analyze_photo(
        uuid.UUID(photo_id), sessions=session_factory(), storage=get_storage(), thumb_size=settings.thumb_size
    )
    log.info("photos.analyze %s: %s", photo_id, outcome)
    return outcome
