"""Subjects: create, read, list, delete (with every photo and stored file)."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.core.errors import NotFound, Unprocessable
from app.core.keys import subject_prefix, training_prefix
from app.core.pagination import keyset
from app.core.storage import Storage
from app.core.tx import after_commit
from app.db import Photo, Subject, Training, User
from app.db.base import utcnow
from app.subjects.schemas import PhotoCounts, SubjectCreate, SubjectRead


def create_subject(session: Session, *, user: User, data: SubjectCreate) -> Subject:
    if not data.consent:
        raise Unprocessable(
            "Training a model of a person needs their consent.",
            code="consent_required",
            hint="Send `consent: true` to confirm you are this person or have their permission.",
        )
    subject = Subject(user_id=user.id, name=data.name, class_word=data.class_word, consent_at=utcnow())
    session.add(subject)
    session.flush()
    return subject


def get_subject(session: Session, *, user: User, subject_id: uuid.UUID) -> Subject:
    """The caller's subject; another user's answers exactly like a missing one."""
    subject = session.scalar(select(Subject).where(Subject.id == subject_id, Subject.user_id == user.id))
    if subject is None:
        raise NotFound("No such subject.", code="subject_not_found", hint="List yours with GET /v1/subjects.")
    return subject


def list_subjects(session: Session, *, user: User, after: uuid.UUID | None, limit: int) -> list[Subject]:
    query = keyset(select(Subject).where(Subject.user_id == user.id), Subject.id, after=after, limit=limit)
    return list(session.scalars(query))


def photo_counts(session: Session, subject_ids: list[uuid.UUID]) -> dict[uuid.UUID, PhotoCounts]:
    """Photo counts by status for several subjects in one query."""
    counts = {sid: PhotoCounts() for sid in subject_ids}
    if not subject_ids:
        return counts
    rows = session.execute(
        select(Photo.subject_id, Photo.status, func.count())
        .where(Photo.subject_id.in_(subject_ids))
        .group_by(Photo.subject_id, Photo.status)
    )
    for sid, status, n in rows:
        entry = counts[sid]
        setattr(entry, status, n)
        entry.total += n
    return counts


def to_read(subject: Subject, counts: PhotoCounts) -> SubjectRead:
    return SubjectRead(
        id=subject.id,
        name=subject.name,
        class_word=subject.class_word,
        consent_at=subject.consent_at,
        created_at=subject.created_at,
        photos=counts,
    )


def delete_subject(session: Session, *, subject: Subject, storage: Storage) -> None:
    """Delete the subject and its photos; stored files go once the deletion has committed."""
    trainings = list(session.scalars(select(Training.id).where(Training.subject_id == subject.id)))
    session.execute(delete(Photo).where(Photo.subject_id == subject.id))
    # A running training finds its row gone at its next progress write and stops.
    session.execute(delete(Training).where(Training.subject_id == subject.id))
    session.delete(subject)
    session.flush()
    prefixes = [subject_prefix(subject.user_id, subject.id)]
    prefixes += [training_prefix(subject.user_id, t) for t in trainings]
    after_commit(session, lambda: [storage.delete_prefix(p) for p in prefixes])
