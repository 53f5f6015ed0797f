"""/v1/models: the trained LoRAs and their files."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response, status
from fastapi.responses import StreamingResponse

from app.core.deps import DB, AppSettings, AppStorage, CurrentUser
from app.core.errors import NotFound
from app.core.pagination import Page, PageParams, next_cursor
from app.core.storage import ObjectNotFound
from app.models import service
from app.models.schemas import ModelRead

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=Page[ModelRead])
def list_models(
    session: DB, user: CurrentUser, settings: AppSettings, page: Annotated[PageParams, Depends()]
) -> Page[ModelRead]:
    rows = service.list_models(session, user=user, after=page.after, limit=page.limit)
    return Page(
        items=[service.to_read(m, settings) for m in rows[: page.limit]], next_cursor=next_cursor(rows, page.limit)
    )


@router.get("/{model_id}", response_model=ModelRead)
def get_model(model_id: uuid.UUID, session: DB, user: CurrentUser, settings: AppSettings) -> ModelRead:
    return service.to_read(service.get_model(session, user=user, model_id=model_id), settings)


@router.delete("/{model_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_model(model_id: uuid.UUID, session: DB, user: CurrentUser, storage: AppStorage) -> Response:
    service.delete_model(session, model=service.get_model(session, user=user, model_id=model_id), storage=storage)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{model_id}/download", response_class=StreamingResponse)
def download(
    model_id: uuid.UUID,
    session: DB,
    user: CurrentUser,
    storage: AppStorage,
    format: Literal["diffusers", "kohya"] = "diffusers",  # noqa: A002 - the query parameter's name
) -> StreamingResponse:
    """The LoRA as `.safetensors`: `diffusers` for `load_lora_weights`, `kohya` for ComfyUI/A1111/Forge."""
    model = service.get_model(session, user=user, model_id=model_id)
    entry = model.files.get(format)
    try:
        if entry is None:
            raise ObjectNotFound(format)
        chunks = storage.iter_chunks(entry["key"])
    except ObjectNotFound:
        raise NotFound(
            f"The {format} file of this model is missing.", code="file_missing", hint="Train the model again."
        ) from None
    headers = {
        "Content-Disposition": f'attachment; filename="{service.download_name(model, format)}"',
        "Content-Length": str(entry["size_bytes"]),
    }
    return StreamingResponse(chunks, media_type="application/octet-stream", headers=headers)


JPEG = {200: {"content": {"image/jpeg": {}}, "description": "the JPEG image"}}


@router.get("/{model_id}/samples/{index}", response_class=StreamingResponse, responses=JPEG)
def sample_image(model_id: uuid.UUID, index: int, session: DB, user: CurrentUser, storage: AppStorage) -> Response:
    """One assessment sample (see the model's `samples`, in that order)."""
    model = service.get_model(session, user=user, model_id=model_id)
    return _jpeg(storage, service.image_key(model, index))


@router.get("/{model_id}/contact-sheet", response_class=StreamingResponse, responses=JPEG)
def contact_sheet(model_id: uuid.UUID, session: DB, user: CurrentUser, storage: AppStorage) -> Response:
    """Every sample: a row per checkpoint, a column per prompt, each with its score; the kept row framed."""
    model = service.get_model(session, user=user, model_id=model_id)
    return _jpeg(storage, service.image_key(model, "contact_sheet"))


def _jpeg(storage: AppStorage, key: str) -> Response:
    try:
        data = storage.get(key)
    except ObjectNotFound:
        raise NotFound(
            "The image is missing from storage.", code="file_missing", hint="Train the model again."
        ) from None
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
