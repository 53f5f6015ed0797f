from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from app.audit.service import record
from app.core.deps import DB, AppSettings, AppStorage, CurrentUser
from app.core.pagination import Page, PageParams, next_cursor
from app.subjects import service
from app.subjects.consent import CONSENT_TEXT, CONSENT_VERSION
from app.subjects.report import build_report
from app.subjects.schemas import ConsentRead, SubjectCreate, SubjectRead, SubjectReport

router = APIRouter(prefix="/v1/subjects", tags=["subjects"])
consent_router = APIRouter(prefix="/v1/consent", tags=["subjects"])


@consent_router.get("", response_model=ConsentRead)
def read_consent(user: CurrentUser) -> ConsentRead:
    """The consent statement to show before creating a subject; send its `version` as `consent_version`."""
    return ConsentRead(version=CONSENT_VERSION, text=CONSENT_TEXT)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SubjectRead)
def create_subject(data: SubjectCreate, session: DB, user: CurrentUser) -> SubjectRead:
    """Create a subject: the person a model will be trained on."""
    subject = service.create_subject(session, user=user, data=data)
    return service.to_read(subject, service.photo_counts(session, [subject.id])[subject.id])


@router.get("", response_model=Page[SubjectRead])
def list_subjects(session: DB, user: CurrentUser, page: Annotated[PageParams, Depends()]) -> Page[SubjectRead]:
    """The caller's subjects, oldest first."""
    rows = service.list_subjects(session, user=user, after=page.after, limit=page.limit)
    shown = rows[: page.limit]
    counts = service.photo_counts(session, [s.id for s in shown])
    return Page(items=[service.to_read(s, counts[s.id]) for s in shown], next_cursor=next_cursor(rows, page.limit))


@router.get("/{subject_id}", response_model=SubjectRead)
def get_subject(subject_id: uuid.UUID, session: DB, user: CurrentUser) -> SubjectRead:
    subject = service.get_subject(session, user=user, subject_id=subject_id)
    return service.to_read(subject, service.photo_counts(session, [subject.id])[subject.id])


@router.delete("/{subject_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_subject(subject_id: uuid.UUID, session: DB, user: CurrentUser, storage: AppStorage) -> Response:
    """Delete the subject, its photos and every stored file of them."""
    subject = service.get_subject(session, user=user, subject_id=subject_id)
    service.delete_subject(session, subject=subject, storage=storage)
    record(session, action="subject_deleted", user_id=user.id, target_type="subject", target_id=subject_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{subject_id}/report", response_model=SubjectReport)
def get_report(subject_id: uuid.UUID, session: DB, user: CurrentUser, settings: AppSettings) -> SubjectReport:
    """Whether the photos are ready to train, what is wrong with them, and what to add."""
    subject = service.get_subject(session, user=user, subject_id=subject_id)
    return build_report(session, subject=subject, settings=settings)
