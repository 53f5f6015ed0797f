"""/v1/files: upload a file once (a LoRA, a start image, a zip of photos), then refer to it by id."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile, status
from fastapi.responses import StreamingResponse

from app.audit.service import record
from app.core.deps import DB, AppSettings, AppStorage, CurrentUser
from app.core.downloads import REDIRECT, download_response
from app.core.errors import NotFound
from app.core.http_ratelimit import RateLimit, RateLimitedRoute
from app.core.openapi import JSON_FIELD
from app.core.pagination import Page, PageParams, next_cursor
from app.core.ratelimit import UPLOADS
from app.files import service
from app.files.schemas import FileRead

router = APIRouter(prefix="/v1/files", tags=["files"], route_class=RateLimitedRoute)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=FileRead,
    dependencies=[Depends(RateLimit(UPLOADS))],
)
def upload_file(
    session: DB,
    user: CurrentUser,
    settings: AppSettings,
    storage: AppStorage,
    content: Annotated[UploadFile, File(description="the file: a .safetensors LoRA, an image or a zip")],
    metadata: Annotated[
        str | None, Form(description="a JSON object kept with the file", json_schema_extra={JSON_FIELD: True})
    ] = None,
) -> FileRead:
    """Store a file for use as `loras[].file_id`, a generation's `image`, or a training's photos."""
    row = service.create_file(
        session,
        user=user,
        stream=content.file,
        filename=content.filename,
        content_type=content.content_type,
        metadata=service.parse_metadata(metadata),
        settings=settings,
        storage=storage,
    )
    return service.to_read(row, settings)


@router.get("", response_model=Page[FileRead])
def list_files(
    session: DB, user: CurrentUser, settings: AppSettings, page: Annotated[PageParams, Depends()]
) -> Page[FileRead]:
    rows = service.list_files(session, user=user, after=page.after, limit=page.limit)
    return Page(
        items=[service.to_read(r, settings) for r in rows[: page.limit]], next_cursor=next_cursor(rows, page.limit)
    )


@router.get("/{file_id}", response_model=FileRead)
def get_file(file_id: uuid.UUID, session: DB, user: CurrentUser, settings: AppSettings) -> FileRead:
    return service.to_read(service.get_file(session, user=user, file_id=file_id), settings)


@router.get("/{file_id}/content", response_class=StreamingResponse, responses=REDIRECT)
def file_content(
    file_id: uuid.UUID, session: DB, user: CurrentUser, settings: AppSettings, storage: AppStorage
) -> Response:
    """The file's bytes; with S3 storage a 307 to a presigned link."""
    row = service.get_file(session, user=user, file_id=file_id)
    record(session, action="file_downloaded", user_id=user.id, target_type="file", target_id=row.id)
    return download_response(
        storage,
        row.key,
        filename=row.name,
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        settings=settings,
        missing=NotFound("The file's content is missing.", code="file_missing", hint="Upload it again."),
    )


@router.delete("/{file_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_file(file_id: uuid.UUID, session: DB, user: CurrentUser, storage: AppStorage) -> Response:
    service.delete_file(session, row=service.get_file(session, user=user, file_id=file_id), storage=storage)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
