"""Subjects: create, read, list, delete (with every photo and stored file)."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit.service import record
from app.core.errors import NotFound, Unprocessable
from app.core.pagination import keyset
from app.core.settings import Settings, get_settings
from app.core.storage import Storage
from app.db import Photo, Subject, User
from app.db.base import utcnow
from app.privacy import erase
from app.subjects.consent import accepted_version
from app.subjects.schemas import PhotoCounts, SubjectCreate, SubjectRead


def create_subject(session: Session, *, user: User, data: SubjectCreate) -> Subject:
    if not data.consent:
        raise Unprocessable(
            "Training a model of a person needs their consent.",
            code="consent_required",
            hint="Send `consent: true` to confirm you are this person or have their permission.",
        )
    version = accepted_version(data.consent_version)
    subject = Subject(
        user_id=user.id, name=data.name, class_word=data.class_word, consent_at=utcnow(), consent_version=version
    )
    session.add(subject)
    session.flush()
    record(
        session,
        action="subject_created",
        user_id=user.id,
        target_type="subject",
        target_id=subject.id,
        details={"consent_version": version},
    )
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
        consent_version=subject.consent_version,
        created_at=subject.created_at,
        photos=counts,
    )


def delete_subject(session: Session, *, subject: Subject, storage: Storage, settings: Settings | None = None) -> None:
    """Delete the person: their photos and everything made from their face (trainings, models with their
    samples, generations that used those models or started from its photos, emails and webhooks about
    them); stored files and outbox emails go once the deletion has committed."""
    settings = settings or get_settings()
    found = erase.subject_footprint(session, subject=subject)
    erase.erase_subject_files(session, subject=subject, found=found, storage=storage, settings=settings)
    erase.delete_subject_rows(session, subject=subject, found=found)
