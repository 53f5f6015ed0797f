"""The subject review: a subject's analysed photos judged together, under the subject's lock.

Called by the API (a photo excluded, included or deleted) and by the analysis worker (the
last photo of a batch analysed); free of any web framework, so a worker-only install runs it.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.queue import ANALYZE_PHOTO, enqueue
from app.core.settings import Settings
from app.db import Photo, PhotoStatus, Subject
from app.db.base import utcnow
from app.photos.review import PhotoFacts, encodings_from_bytes, review


def _facts(photo: Photo) -> PhotoFacts:
    return PhotoFacts(
        id=photo.id,
        excluded=photo.excluded,
        reasons=list(photo.reasons or []),
        encodings=encodings_from_bytes(photo.encodings),
        quality=photo.quality or 0.0,
        pose=photo.pose,
        shot=photo.shot,
        brightness=photo.brightness,
        phash=photo.phash,
        signature=photo.signature,
    )


def lock_subject(session: Session, subject_id: uuid.UUID) -> None:
    """Take the subject's write lock before reading its photos.

    A no-op UPDATE: on Postgres it holds the row lock until commit, so reviews of one subject
    run one after another; on SQLite it takes the database write lock up front, so a read
    snapshot is never upgraded to a write after someone else committed (SQLITE_BUSY).
    """
    session.execute(update(Subject).where(Subject.id == subject_id).values(id=Subject.id))


def review_subject(session: Session, *, subject_id: uuid.UUID, settings: Settings) -> int:
    """Re-judge a subject's analysed photos together (identity, duplicates, selection).

    Holds the subject's lock (`lock_subject`) while it reads and writes. A group photo whose
    cropped face turns out not to be the subject goes back to `pending` with the right face
    chosen, and is analysed again. Returns how many photos were sent back.
    """
    lock_subject(session, subject_id)
    photos = list(session.scalars(select(Photo).where(Photo.subject_id == subject_id).order_by(Photo.id)))
    analyzed = [p for p in photos if p.status == PhotoStatus.analyzed]
    result = review(
        [_facts(p) for p in analyzed],
        threshold=settings.identity_threshold,
        limit=settings.max_training_photos,
        names={p.id: p.filename for p in analyzed},
    )
    sent_back = 0
    for photo in photos:
        outcome = result.outcomes.get(photo.id)
        if outcome is None:
            photo.selected = False
            continue
        photo.reasons = outcome.reasons
        photo.verdict = outcome.verdict
        photo.identity_distance = outcome.identity_distance
        photo.duplicate_of = outcome.duplicate_of
        photo.selected = outcome.selected
        wanted = next((i for i, face in enumerate(photo.faces) if face.get("encoding") == outcome.encoding_index), None)
        if outcome.encoding_index is not None and wanted is not None and wanted != photo.face_index:
            photo.face_index = wanted
            photo.status = PhotoStatus.pending
            photo.selected = False
            # A new analysis, with attempts of its own; the sweep times its resend from now.
            photo.analysis_attempts, photo.analysis_started_at = 0, None
            photo.dispatched_at, photo.resends = utcnow(), 0
            enqueue(session, ANALYZE_PHOTO, str(photo.id))
            sent_back += 1
    subject = session.get(Subject, subject_id)
    if subject is not None:
        subject.identity = result.identity.tobytes() if result.identity is not None else None
        subject.reviewed_at = utcnow()
    session.flush()
    return sent_back
