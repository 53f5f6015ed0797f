from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Query, Request, Response, UploadFile, status
from fastapi.responses import StreamingResponse

from app.audit.service import record
from app.core.deps import DB, AppSettings, AppStorage, CurrentUser
from app.core.errors import AppError, NotFound
from app.core.http_ratelimit import RateLimit, RateLimitedRoute
from app.core.metrics import FILES_REJECTED, PHOTOS_UPLOADED
from app.core.openapi import REQUIRED_PART
from app.core.pagination import Page, PageParams, next_cursor
from app.core.ratelimit import UPLOADS
from app.core.storage import ObjectNotFound
from app.photos import service
from app.photos.schemas import PhotoRead, PhotoUpdate, UploadResult
from app.subjects.service import get_subject

router = APIRouter(prefix="/v1/subjects/{subject_id}/photos", tags=["photos"], route_class=RateLimitedRoute)

_MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png"}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadResult,
    dependencies=[Depends(RateLimit(UPLOADS))],
)
def upload_photos(
    subject_id: uuid.UUID,
    request: Request,
    session: DB,
    user: CurrentUser,
    settings: AppSettings,
    storage: AppStorage,
    files: Annotated[
        list[UploadFile] | None,
        File(description="Images (JPEG, PNG, WebP, HEIC) and/or zip archives", json_schema_extra={REQUIRED_PART: True}),
    ] = None,
) -> UploadResult:
    """Upload photos; each accepted one is analysed in the background."""
    subject = get_subject(session, user=user, subject_id=subject_id)
    try:
        result = service.upload_photos(
            session,
            user=user,
            subject=subject,
            uploads=files or [],
            settings=settings,
            storage=storage,
            executor=request.app.state.executor,
        )
    except AppError as exc:
        FILES_REJECTED.labels(exc.code).inc()
        raise
    PHOTOS_UPLOADED.inc(len(result.photos))
    for item in result.rejected:
        FILES_REJECTED.labels(item.error["code"]).inc()
    return result


@router.get("", response_model=Page[PhotoRead])
def list_photos(
    subject_id: uuid.UUID,
    session: DB,
    user: CurrentUser,
    page: Annotated[PageParams, Depends()],
    status_: Annotated[Literal["pending", "analyzed", "failed"] | None, Query(alias="status")] = None,
) -> Page[PhotoRead]:
    """The subject's photos in upload order, with their analysis."""
    subject = get_subject(session, user=user, subject_id=subject_id)
    rows = service.list_photos(session, subject=subject, after=page.after, limit=page.limit, status=status_)
    return Page(items=[service.to_read(p) for p in rows[: page.limit]], next_cursor=next_cursor(rows, page.limit))


@router.get("/{photo_id}", response_model=PhotoRead)
def get_photo(subject_id: uuid.UUID, photo_id: uuid.UUID, session: DB, user: CurrentUser) -> PhotoRead:
    subject = get_subject(session, user=user, subject_id=subject_id)
    return service.to_read(service.get_photo(session, subject=subject, photo_id=photo_id))


IMAGE = {
    200: {
        "description": "the image, in the format it is stored in",
        "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in _MEDIA_TYPES.values()},
    }
}


@router.get("/{photo_id}/image", response_class=StreamingResponse, responses=IMAGE)
def get_image(
    subject_id: uuid.UUID,
    photo_id: uuid.UUID,
    session: DB,
    user: CurrentUser,
    storage: AppStorage,
    variant: Literal["original", "crop", "thumb"] = "original",
) -> StreamingResponse:
    """The stored image: upright, re-encoded, with no metadata."""
    subject = get_subject(session, user=user, subject_id=subject_id)
    photo = service.get_photo(session, subject=subject, photo_id=photo_id)
    key = service.image_key(photo, variant)
    try:
        chunks = storage.iter_chunks(key)
    except ObjectNotFound:
        raise NotFound(
            "The stored image is missing.", code="image_missing", hint="Delete the photo and upload it again."
        ) from None
    ext = key.rsplit(".", 1)[-1]
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
    return StreamingResponse(chunks, media_type=_MEDIA_TYPES.get(ext, "application/octet-stream"), headers=headers)


@router.patch("/{photo_id}", response_model=PhotoRead)
def update_photo(
    subject_id: uuid.UUID,
    photo_id: uuid.UUID,
    data: PhotoUpdate,
    session: DB,
    user: CurrentUser,
    settings: AppSettings,
) -> PhotoRead:
    """Edit the caption or exclude the photo from training."""
    subject = get_subject(session, user=user, subject_id=subject_id)
    photo = service.get_photo(session, subject=subject, photo_id=photo_id)
    return service.to_read(service.update_photo(session, photo=photo, data=data, settings=settings))


@router.delete("/{photo_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_photo(
    subject_id: uuid.UUID,
    photo_id: uuid.UUID,
    session: DB,
    user: CurrentUser,
    storage: AppStorage,
    settings: AppSettings,
) -> Response:
    subject = get_subject(session, user=user, subject_id=subject_id)
    photo = service.get_photo(session, subject=subject, photo_id=photo_id)
    service.delete_photo(session, photo=photo, storage=storage, settings=settings)
    details = {"subject_id": subject_id}
    record(session, action="photo_deleted", user_id=user.id, target_type="photo", target_id=photo_id, details=details)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
