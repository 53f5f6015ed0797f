"""/v1/models: the trained LoRAs and their files."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response, status
from fastapi.responses import StreamingResponse

from app.audit.service import record
from app.core import downloads
from app.core.deps import DB, AppSettings, AppStorage, CurrentUser
from app.core.downloads import REDIRECT, DownloadLink, download_response
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


Format = Literal["diffusers", "kohya"]
OCTETS = {200: {"content": {"application/octet-stream": {}}, "description": "the .safetensors file"}}


def _file(session: DB, user: CurrentUser, model_id: uuid.UUID, format: Format, how: str) -> tuple:  # noqa: A002
    """The model's file entry and the error for a missing one, after the owner check; audited."""
    model = service.get_model(session, user=user, model_id=model_id)
    missing = NotFound(
        f"The {format} file of this model is missing.", code="file_missing", hint="Train the model again."
    )
    entry = model.files.get(format)
    if entry is None:
        raise missing
    record(
        session,
        action="model_downloaded",
        user_id=user.id,
        target_type="model",
        target_id=model.id,
        details={"format": format, "via": how},
    )
    return model, entry, missing


@router.get("/{model_id}/download", response_class=StreamingResponse, responses={**OCTETS, **REDIRECT})
def download(
    model_id: uuid.UUID,
    session: DB,
    user: CurrentUser,
    settings: AppSettings,
    storage: AppStorage,
    format: Format = "diffusers",  # noqa: A002 - the query parameter's name
) -> Response:
    """The LoRA as `.safetensors`: `diffusers` for `load_lora_weights`, `kohya` for ComfyUI/A1111/Forge.

    With S3 storage the answer is a 307 to a presigned link; `curl -L` and browsers follow it.
    """
    model, entry, missing = _file(session, user, model_id, format, "download")
    return download_response(
        storage,
        entry["key"],
        filename=service.download_name(model, format),
        content_type="application/octet-stream",
        size_bytes=entry["size_bytes"],
        settings=settings,
        missing=missing,
    )


@router.get("/{model_id}/download-link", response_model=DownloadLink)
def download_link(
    model_id: uuid.UUID,
    session: DB,
    user: CurrentUser,
    settings: AppSettings,
    storage: AppStorage,
    format: Format = "diffusers",  # noqa: A002 - the query parameter's name
) -> DownloadLink:
    """Where to fetch the LoRA, for clients that cannot follow the download's redirect with their key (the
    web page): with S3 a presigned link valid for 15 minutes at most, else the download URL itself."""
    model, entry, missing = _file(session, user, model_id, format, "link")
    return downloads.download_link(
        storage,
        entry["key"],
        api_url=f"{settings.public_url.rstrip('/')}/v1/models/{model.id}/download?format={format}",
        filename=service.download_name(model, format),
        content_type="application/octet-stream",
        size_bytes=entry["size_bytes"],
        settings=settings,
        missing=missing,
    )


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
