"""The Replicate-compatible routes (mounted under /replicate; the client adds the /v1 itself)."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Header, Request, Response, UploadFile, status
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from app.audit.service import record
from app.core.deps import DB, AppSettings, AppStorage, Bearer, sign_in
from app.core.downloads import REDIRECT, download_response
from app.core.errors import NotFound, Unprocessable
from app.core.http_ratelimit import RateLimit, ReplicateRateLimitedRoute
from app.core.ratelimit import GENERATIONS, TRAININGS, UPLOADS
from app.db import ACTIVE_GENERATION, Generation, Model, ReplicateModel, UploadedFile, User
from app.files import service as files
from app.generations import service as generations
from app.models.service import delete_model as delete_lookalike_model
from app.replicate import predictions, service, trainings
from app.replicate.inputs import Context
from app.replicate.schemas import (
    FileRead,
    ModelCreate,
    ModelRead,
    Page,
    PredictionCreate,
    PredictionRead,
    TrainingCreate,
    TrainingRead,
    VersionRead,
)

router = APIRouter(prefix="/v1", route_class=ReplicateRateLimitedRoute)

# `Prefer: wait` is held this much less than asked (half of a short wait): the client's read timeout is the
# wait plus 0.5 s, and the answer (outputs as data URIs included) must reach it before that.
WAIT_MARGIN_S = 1.0


def _user(request: Request, session: DB, _: Bearer) -> User:
    # The client sends `Bearer <token>`; older clients and Replicate's curl examples send `Token <token>`.
    authorization = request.headers.get("authorization")
    if authorization and authorization[:6].lower() == "token ":
        authorization = "Bearer " + authorization[6:]
    return sign_in(request, session, authorization)


def _context(
    request: Request, session: DB, user: Annotated[User, Depends(_user)], settings: AppSettings, storage: AppStorage
) -> Context:
    # Our file URLs are recognised whether they carry the public URL or the address this request came to.
    here = f"{request.url.scheme}://{request.url.netloc}"
    origins = tuple(dict.fromkeys((settings.public_url.rstrip("/"), here)))
    return Context(session=session, user=user, settings=settings, storage=storage, origins=origins)


Ctx = Annotated[Context, Depends(_context)]
PreferHeader = Annotated[str | None, Header(description="`wait` or `wait=N`: answer when done, up to N seconds")]


# --- account and models ---------------------------------------------------------------------------------


@router.get("/account")
def account(ctx: Ctx) -> dict[str, str | None]:
    """The caller; `username` is a fine owner name for models."""
    local = ctx.user.email.split("@")[0]
    username = re.sub(r"[^A-Za-z0-9._-]+", "-", local).strip("-._") or "user"
    return {"type": "user", "username": username, "name": ctx.user.email, "github_url": None}


@router.post("/models", status_code=status.HTTP_201_CREATED, response_model=ModelRead)
def create_model(data: ModelCreate, ctx: Ctx) -> ModelRead:
    """A named model to train versions into (`destination`); any owner name works, scoped to you."""
    row = service.create_model(ctx.session, user=ctx.user, data=data)
    return service.to_model_read(ctx.session, row, ctx.settings)


@router.get("/models", response_model=Page[ModelRead])
def list_models(ctx: Ctx, cursor: str | None = None) -> Page[ModelRead]:
    """Your models, newest first."""
    rows = service.list_models(ctx.session, user=ctx.user, before=service.parse_cursor(cursor))
    return Page(
        results=[service.to_model_read(ctx.session, r, ctx.settings) for r in rows[: service.PAGE_SIZE]],
        next=service.next_url(rows, ctx.api_url("/v1/models")),
    )


@router.get("/models/{owner}/{name}", response_model=ModelRead)
def get_model(owner: str, name: str, ctx: Ctx) -> ModelRead:
    row = service.get_model(ctx.session, user=ctx.user, owner=owner, name=name)
    return service.to_model_read(ctx.session, row, ctx.settings)


@router.delete("/models/{owner}/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_model(owner: str, name: str, ctx: Ctx) -> Response:
    """Delete a model that has no versions."""
    service.delete_model(ctx.session, row=service.get_model(ctx.session, user=ctx.user, owner=owner, name=name))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/models/{owner}/{name}/versions", response_model=Page[VersionRead])
def list_versions(owner: str, name: str, ctx: Ctx) -> Page[VersionRead]:
    """The model's versions (its trained LoRAs), newest first."""
    row = service.get_model(ctx.session, user=ctx.user, owner=owner, name=name)
    return Page(results=[service.to_version_read(m) for m in service.versions(ctx.session, row)])


@router.get("/models/{owner}/{name}/versions/{version_id}", response_model=VersionRead)
def get_version(owner: str, name: str, version_id: str, ctx: Ctx) -> VersionRead:
    row = service.get_model(ctx.session, user=ctx.user, owner=owner, name=name)
    return service.to_version_read(service.get_version(ctx.session, row=row, version_id=version_id))


@router.delete("/models/{owner}/{name}/versions/{version_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_version(owner: str, name: str, version_id: str, ctx: Ctx) -> Response:
    """Delete a version: the trained LoRA and its files."""
    row = service.get_model(ctx.session, user=ctx.user, owner=owner, name=name)
    model = service.get_version(ctx.session, row=row, version_id=version_id)
    delete_lookalike_model(ctx.session, model=model, storage=ctx.storage)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- trainings ------------------------------------------------------------------------------------------


@router.post(
    "/models/{owner}/{name}/versions/{version_id:path}/trainings",
    status_code=status.HTTP_201_CREATED,
    response_model=TrainingRead,
    dependencies=[Depends(RateLimit(TRAININGS))],
)
def create_training(
    owner: str, name: str, version_id: str, body: TrainingCreate, request: Request, ctx: Ctx
) -> TrainingRead:
    """Train a version of `destination` on `input.input_images` with the trainer `owner/name:version_id`."""
    training = trainings.create_training(
        ctx, trainer=(owner, name, version_id), body=body, executor=request.app.state.executor
    )
    return trainings.to_read(ctx, training, trainings.destination_names(ctx, [training]))


@router.get("/trainings", response_model=Page[TrainingRead])
def list_trainings(ctx: Ctx, cursor: str | None = None) -> Page[TrainingRead]:
    """All your trainings, newest first (those started through the native API too)."""
    rows = trainings.list_trainings(ctx, before=service.parse_cursor(cursor))
    page = rows[: service.PAGE_SIZE]
    names = trainings.destination_names(ctx, page)
    return Page(
        results=[trainings.to_read(ctx, t, names) for t in page],
        next=service.next_url(rows, ctx.api_url("/v1/trainings")),
    )


@router.get("/trainings/{training_id}", response_model=TrainingRead)
def get_training(training_id: str, ctx: Ctx) -> TrainingRead:
    training = trainings.get(ctx, training_id)
    return trainings.to_read(ctx, training, trainings.destination_names(ctx, [training]))


@router.post("/trainings/{training_id}/cancel", response_model=TrainingRead)
def cancel_training(training_id: str, ctx: Ctx) -> TrainingRead:
    training = trainings.cancel(ctx, trainings.get(ctx, training_id))
    return trainings.to_read(ctx, training, trainings.destination_names(ctx, [training]))


# --- predictions ----------------------------------------------------------------------------------------


@router.post(
    "/predictions",
    status_code=status.HTTP_201_CREATED,
    response_model=PredictionRead,
    dependencies=[Depends(RateLimit(GENERATIONS))],
)
def create_prediction(
    body: PredictionCreate, request: Request, response: Response, ctx: Ctx, prefer: PreferHeader = None
) -> PredictionRead:
    """Run a version (`version`: an id, or owner/name:version); `Prefer: wait` answers when it is done."""
    model, row = predictions.resolve_version(ctx, body.version)
    return _predict(ctx, model, row, body, request, response, prefer)


@router.post(
    "/models/{owner}/{name}/predictions",
    status_code=status.HTTP_201_CREATED,
    response_model=PredictionRead,
    dependencies=[Depends(RateLimit(GENERATIONS))],
)
def create_model_prediction(
    owner: str,
    name: str,
    body: PredictionCreate,
    request: Request,
    response: Response,
    ctx: Ctx,
    prefer: PreferHeader = None,
) -> PredictionRead:
    """Run the model's latest version."""
    row = service.get_model(ctx.session, user=ctx.user, owner=owner, name=name)
    return _predict(ctx, predictions.latest_of(ctx, row), row, body, request, response, prefer)


def _predict(
    ctx: Context,
    model: Model,
    row: ReplicateModel | None,
    body: PredictionCreate,
    request: Request,
    response: Response,
    prefer: str | None,
) -> PredictionRead:
    if body.webhook or body.webhook_completed:
        raise Unprocessable(
            "Webhooks are not supported on the Replicate-compatible API.",
            code="webhook_unsupported",
            hint="Leave webhook out and wait (replicate.run waits), or poll the prediction.",
        )
    wait = generations.prefer_wait(prefer, ctx.settings)
    # The client makes file objects only of https: and data: outputs; over plain http a waited prediction
    # answers data URIs, as Replicate does in sync mode.
    data_uris = wait is not None and not ctx.settings.public_url.lower().startswith("https:")
    generation = predictions.create_prediction(ctx, model=model, row=row, input=body.input, data_uris=data_uris)
    generation_id = generation.id
    response.headers["Location"] = ctx.api_url(f"/v1/predictions/{generation_id.hex}")
    if wait is None:
        generation = ctx.session.get_one(Generation, generation_id)
    else:
        hold = wait - min(WAIT_MARGIN_S, wait / 2)
        generation = generations.settle(ctx.session, request.app.state.session_factory, generation_id, hold)
        response.headers["Preference-Applied"] = f"wait={wait:g}"
    waited_out = wait is not None and generation.status in ACTIVE_GENERATION
    return predictions.to_read(ctx, generation, predictions.version_names(ctx, [generation]), waited=waited_out)


@router.get("/predictions", response_model=Page[PredictionRead])
def list_predictions(ctx: Ctx, cursor: str | None = None) -> Page[PredictionRead]:
    """All your predictions, newest first (native generations too); outputs as URLs, never data URIs."""
    rows = predictions.list_predictions(ctx, before=service.parse_cursor(cursor))
    page = rows[: service.PAGE_SIZE]
    names = predictions.version_names(ctx, page)
    return Page(
        results=[predictions.to_read(ctx, g, names, inline=False) for g in page],
        next=service.next_url(rows, ctx.api_url("/v1/predictions")),
    )


@router.get("/predictions/{prediction_id}", response_model=PredictionRead)
def get_prediction(prediction_id: str, ctx: Ctx) -> PredictionRead:
    generation = predictions.get_prediction(ctx, prediction_id)
    return predictions.to_read(ctx, generation, predictions.version_names(ctx, [generation]))


@router.post("/predictions/{prediction_id}/cancel", response_model=PredictionRead)
def cancel_prediction(prediction_id: str, ctx: Ctx) -> PredictionRead:
    generation = predictions.cancel_prediction(ctx, predictions.get_prediction(ctx, prediction_id))
    return predictions.to_read(ctx, generation, predictions.version_names(ctx, [generation]))


# --- files ----------------------------------------------------------------------------------------------


@router.post(
    "/files",
    status_code=status.HTTP_201_CREATED,
    response_model=FileRead,
    dependencies=[Depends(RateLimit(UPLOADS))],
)
def create_file(
    ctx: Ctx,
    content: Annotated[UploadFile, File(description="the file")],
    filename: Annotated[str | None, Form()] = None,
    type: Annotated[str | None, Form(description="its content type")] = None,  # noqa: A002 - Replicate's name
    metadata: Annotated[str | None, Form(description="a JSON object")] = None,
) -> FileRead:
    """Store a file to pass as an input (its `urls.get`); the client does this for open files."""
    row = files.create_file(
        ctx.session,
        user=ctx.user,
        stream=content.file,
        filename=filename or content.filename,
        content_type=type or content.content_type,
        metadata=files.parse_metadata(metadata),
        settings=ctx.settings,
        storage=ctx.storage,
    )
    return service.to_file_read(row, ctx.settings)


@router.get("/files", response_model=Page[FileRead])
def list_files(ctx: Ctx, cursor: str | None = None) -> Page[FileRead]:
    """Your files, newest first."""
    rows = service.list_files(ctx.session, user=ctx.user, before=service.parse_cursor(cursor))
    return Page(
        results=[service.to_file_read(r, ctx.settings) for r in rows[: service.PAGE_SIZE]],
        next=service.next_url(rows, ctx.api_url("/v1/files")),
    )


@router.get("/files/{file_id}", response_model=FileRead)
def get_file(file_id: str, ctx: Ctx) -> FileRead:
    return service.to_file_read(_file(ctx.session, ctx.user, file_id), ctx.settings)


@router.get("/files/{file_id}/download", response_class=StreamingResponse, responses=REDIRECT)
def download_file(file_id: str, ctx: Ctx) -> Response:
    """The file's content, for its owner (send the API key); with S3 storage a 307 to a presigned link."""
    row = _file(ctx.session, ctx.user, file_id)
    record(ctx.session, action="file_downloaded", user_id=ctx.user.id, target_type="file", target_id=row.id)
    return download_response(
        ctx.storage,
        row.key,
        filename=row.name,
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        settings=ctx.settings,
        missing=NotFound("The file's content is missing.", code="file_missing", hint="Upload it again."),
    )


@router.delete("/files/{file_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_file(file_id: str, ctx: Ctx) -> Response:
    files.delete_file(ctx.session, row=_file(ctx.session, ctx.user, file_id), storage=ctx.storage)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _file(session: Session, user: User, file_id: str) -> UploadedFile:
    try:
        ident = uuid.UUID(file_id)
    except ValueError:
        raise NotFound("No such file.", code="file_not_found", hint="List yours with GET /v1/files.") from None
    return files.get_file(session, user=user, file_id=ident)
