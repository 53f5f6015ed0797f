"""/v1/files: upload a file once (a LoRA, a start image, a zip of photos), then refer to it by id."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile, status
from fastapi.responses import StreamingResponse

from app.core.deps import DB, AppSettings, AppStorage, CurrentUser
from app.core.errors import NotFound
from app.core.pagination import Page, PageParams, next_cursor
from app.core.storage import ObjectNotFound
from app.files import service
from app.files.schemas import FileRead

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=FileRead)
def upload_file(
    session: DB,
    user: CurrentUser,
    settings: AppSettings,
    storage: AppStorage,
    content: Annotated[UploadFile, File(description="the file: a .safetensors LoRA, an image or a zip")],
    metadata: Annotated[str | None, Form(description="a JSON object kept with the file")] = None,
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


@router.get("/{file_id}/content", response_class=StreamingResponse)
def file_content(file_id: uuid.UUID, session: DB, user: CurrentUser, storage: AppStorage) -> StreamingResponse:
    row = service.get_file(session, user=user, file_id=file_id)
    try:
        chunks = storage.iter_chunks(row.key)
    except ObjectNotFound:
        raise NotFound("The file's content is missing.", code="file_missing", hint="Upload it again.") from None
    headers = {"Content-Length": str(row.size_bytes), "Content-Disposition": f'attachment; filename="{row.name}"'}
    return StreamingResponse(chunks, media_type=row.content_type, headers=headers)


@router.delete("/{file_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_file(file_id: uuid.UUID, session: DB, user: CurrentUser, storage: AppStorage) -> Response:
    service.delete_file(session, row=service.get_file(session, user=user, file_id=file_id), storage=storage)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
