"""/v1/generations: images from your LoRAs, queued for a GPU worker; `Prefer: wait` answers when done."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response, status

from app.core.deps import DB, AppSettings, AppStorage, CurrentUser
from app.core.errors import AppError, NotFound
from app.core.http_ratelimit import RateLimit, RateLimitedRoute
from app.core.openapi import errors
from app.core.pagination import Page, PageParams, next_cursor
from app.core.ratelimit import GENERATIONS
from app.core.storage import ObjectNotFound
from app.generations import service
from app.generations.params import OUTPUT_FORMATS
from app.generations.schemas import GenerationCreate, GenerationRead, ModelImageCreate

router = APIRouter(prefix="/v1/generations", tags=["generations"], route_class=RateLimitedRoute)
models_router = APIRouter(prefix="/v1/models", tags=["generations"], route_class=RateLimitedRoute)

PreferHeader = Annotated[
    str | None,
    Header(description="`wait` or `wait=N`: answer when the images are done, holding the request up to N seconds"),
]
IMAGES = {200: {"content": {t: {} for t in OUTPUT_FORMATS.values()}, "description": "the image"}}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=GenerationRead,
    dependencies=[Depends(RateLimit(GENERATIONS))],
    responses=errors(404),
)
def create_generation(
    data: GenerationCreate,
    request: Request,
    response: Response,
    session: DB,
    user: CurrentUser,
    settings: AppSettings,
    storage: AppStorage,
    prefer: PreferHeader = None,
) -> GenerationRead:
    """Queue a generation: 202 while it runs; with `Prefer: wait`, 201 with the outputs once done."""
    generation = service.create_generation(session, user=user, data=data, settings=settings, storage=storage)
    return _answer(generation.id, request, response, session, settings, prefer)


def _answer(
    generation_id: uuid.UUID,
    request: Request,
    response: Response,
    session: DB,
    settings: AppSettings,
    prefer: str | None,
) -> GenerationRead:
    response.headers["Location"] = f"/v1/generations/{generation_id}"
    wait = service.prefer_wait(prefer, settings)
    if wait is None:
        generation = session.get_one(service.Generation, generation_id)
    else:
        generation = service.settle(session, request.app.state.session_factory, generation_id, wait)
        response.headers["Preference-Applied"] = f"wait={wait:g}"
    if generation.status not in service.ACTIVE_GENERATION:
        response.status_code = status.HTTP_201_CREATED
    return service.to_read(generation, settings)


@router.get("", response_model=Page[GenerationRead])
def list_generations(
    session: DB, user: CurrentUser, settings: AppSettings, page: Annotated[PageParams, Depends()]
) -> Page[GenerationRead]:
    """Your generations, oldest first."""
    rows = service.list_generations(session, user=user, after=page.after, limit=page.limit)
    return Page(
        items=[service.to_read(g, settings) for g in rows[: page.limit]], next_cursor=next_cursor(rows, page.limit)
    )


@router.get("/{generation_id}", response_model=GenerationRead)
def get_generation(generation_id: uuid.UUID, session: DB, user: CurrentUser, settings: AppSettings) -> GenerationRead:
    return service.to_read(service.get_generation(session, user=user, generation_id=generation_id), settings)


@router.post("/{generation_id}/cancel", response_model=GenerationRead)
def cancel_generation(
    generation_id: uuid.UUID, session: DB, user: CurrentUser, settings: AppSettings
) -> GenerationRead:
    """Cancel a queued or running generation; a running worker stops before its next image."""
    generation = service.get_generation(session, user=user, generation_id=generation_id)
    return service.to_read(service.cancel_generation(session, generation=generation), settings)


@router.get("/{generation_id}/outputs/{index}", response_class=Response, responses=IMAGES)
def output(generation_id: uuid.UUID, index: int, session: DB, user: CurrentUser, storage: AppStorage) -> Response:
    """One output image, in the generation's output_format."""
    generation = service.get_generation(session, user=user, generation_id=generation_id)
    key = service.output_key(generation, index)
    return _image(storage, key, generation.outputs[index]["content_type"])


@router.get("/{generation_id}/contact-sheet", response_class=Response, responses=IMAGES)
def contact_sheet(generation_id: uuid.UUID, session: DB, user: CurrentUser, storage: AppStorage) -> Response:
    """A sweep's or matrix's images on one labelled JPEG: a column per scale or value, a row per seed."""
    generation = service.get_generation(session, user=user, generation_id=generation_id)
    return _image(storage, service.output_key(generation, "contact_sheet"), "image/jpeg")


def _image(storage: AppStorage, key: str, media_type: str) -> Response:
    try:
        data = storage.get(key)
    except ObjectNotFound:
        raise NotFound("The image is missing from storage.", code="file_missing", hint="Generate it again.") from None
    return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})


@models_router.post(
    "/{model_id}/image",
    response_class=Response,
    responses=IMAGES,
    dependencies=[Depends(RateLimit(GENERATIONS))],
)
def model_image(
    model_id: uuid.UUID,
    data: ModelImageCreate,
    request: Request,
    session: DB,
    user: CurrentUser,
    settings: AppSettings,
    storage: AppStorage,
) -> Response:
    """Generate one image and answer it directly, with its media type (waits up to the server's limit)."""
    create = GenerationCreate(model_id=model_id, num_outputs=1, **data.model_dump())
    generation = service.create_generation(session, user=user, data=create, settings=settings, storage=storage)
    factory = request.app.state.session_factory
    generation = service.settle(session, factory, generation.id, settings.generation_max_wait_s)
    headers = {"X-Generation-Id": str(generation.id), "Location": f"/v1/generations/{generation.id}"}
    if generation.status == "succeeded":
        out = generation.outputs[0]
        headers["X-Seed"] = str(out["seed"])
        body = storage.get(out["key"])
        return Response(body, media_type=out["content_type"], headers=headers)
    if generation.status in service.ACTIVE_GENERATION:
        raise AppError(
            f"The image was not ready within {settings.generation_max_wait_s:g} seconds; it is still being made.",
            code="generation_timeout",
            hint=f"Fetch it later from GET /v1/generations/{generation.id}.",
            status=504,
            details={"generation_id": str(generation.id)},
        )
    error = generation.error or {"code": "generation_canceled", "message": "The generation was canceled.", "hint": None}
    raise AppError(
        error["message"],
        code=error["code"],
        hint=error.get("hint"),
        status=422 if error["code"] in service.USER_ERRORS else 500,
        details={"generation_id": str(generation.id)},
    )
