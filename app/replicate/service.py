"""Replicate-style models (`owner/name`) and their versions (the user's trained Lookalike models), and files.

Models are scoped per user: any owner name works, and another user's `owner/name` is simply not
found. A version is a Lookalike `Model` whose `replicate_model_id` is the model; its id is the
Model's uuid as 32 hex digits. Services flush; the request commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.core.errors import BadRequest, Conflict, NotFound, Unprocessable
from app.core.settings import Settings
from app.db import ACTIVE_TRAINING, Model, ReplicateModel, Training, UploadedFile, User
from app.replicate.inputs import PREFIX, file_url
from app.replicate.openapi import COG_VERSION, version_schema
from app.replicate.schemas import FileRead, ModelCreate, ModelRead, VersionRead

PAGE_SIZE = 100


def create_model(session: Session, *, user: User, data: ModelCreate) -> ReplicateModel:
    taken = session.scalar(
        select(ReplicateModel.id).where(
            ReplicateModel.user_id == user.id, ReplicateModel.owner == data.owner, ReplicateModel.name == data.name
        )
    )
    if taken is not None:
        raise Conflict(
            f"You already have a model named {data.owner}/{data.name}.",
            code="model_exists",
            hint="Use it as a training's destination, or create one with another name.",
        )
    row = ReplicateModel(
        user_id=user.id,
        owner=data.owner,
        name=data.name,
        visibility=data.visibility,
        hardware=data.hardware,
        description=data.description,
        run_count=0,
    )
    session.add(row)
    session.flush()
    return row


def get_model(session: Session, *, user: User, owner: str, name: str) -> ReplicateModel:
    """The caller's model `owner/name`; another user's answers exactly like a missing one."""
    row = session.scalar(
        select(ReplicateModel).where(
            ReplicateModel.user_id == user.id, ReplicateModel.owner == owner, ReplicateModel.name == name
        )
    )
    if row is None:
        raise NotFound(
            f"No model {owner}/{name} among yours.",
            code="model_not_found",
            hint="Create it with replicate.models.create(owner=..., name=..., visibility='private', hardware='gpu'); "
            "models of replicate.com cannot be used here.",
        )
    return row


def parse_name(value: str, *, field: str) -> tuple[str, str, str | None]:
    """(owner, name, version or None) of `owner/name` or `owner/name:version`."""
    head, _, version = value.partition(":")
    owner, slash, name = head.partition("/")
    if not slash or not owner or not name or "/" in name:
        raise Unprocessable(
            f"{field} must look like owner/name or owner/name:version, not {value!r}.",
            code="invalid_model_name",
            hint="Use the owner and name you gave replicate.models.create.",
        )
    return owner, name, version or None


def list_models(session: Session, *, user: User, before: uuid.UUID | None) -> list[ReplicateModel]:
    query = select(ReplicateModel).where(ReplicateModel.user_id == user.id)
    return list(session.scalars(newest_first(query, ReplicateModel.id, before=before)))


def list_files(session: Session, *, user: User, before: uuid.UUID | None) -> list[UploadedFile]:
    query = select(UploadedFile).where(UploadedFile.user_id == user.id)
    return list(session.scalars(newest_first(query, UploadedFile.id, before=before)))


def delete_model(session: Session, *, row: ReplicateModel) -> None:
    """Delete a model with no versions and no training on its way (Replicate's rule, and nothing to lose)."""
    if session.scalar(select(Model.id).where(Model.replicate_model_id == row.id).limit(1)) is not None:
        raise Conflict(
            f"{row.owner}/{row.name} has versions.",
            code="model_has_versions",
            hint="Delete its versions first (DELETE /v1/models/{owner}/{name}/versions/{id}).",
        )
    active = select(Training.id).where(Training.replicate_model_id == row.id, Training.status.in_(ACTIVE_TRAINING))
    if session.scalar(active.limit(1)) is not None:
        raise Conflict(
            f"A training of {row.owner}/{row.name} is still running.",
            code="training_in_progress",
            hint="Wait for it to finish, or cancel it.",
        )
    session.delete(row)
    session.flush()


def versions(session: Session, row: ReplicateModel) -> list[Model]:
    """The model's versions, newest first."""
    query = select(Model).where(Model.replicate_model_id == row.id, Model.user_id == row.user_id)
    return list(session.scalars(query.order_by(Model.id.desc())))


def latest_version(session: Session, row: ReplicateModel) -> Model | None:
    query = select(Model).where(Model.replicate_model_id == row.id, Model.user_id == row.user_id)
    return session.scalar(query.order_by(Model.id.desc()).limit(1))


def get_version(session: Session, *, row: ReplicateModel, version_id: str) -> Model:
    try:
        model_id = uuid.UUID(version_id)
    except ValueError:
        model_id = None
    model = None
    if model_id is not None:
        model = session.scalar(
            select(Model).where(Model.id == model_id, Model.replicate_model_id == row.id, Model.user_id == row.user_id)
        )
    if model is None:
        raise NotFound(
            f"{row.owner}/{row.name} has no version {version_id}.",
            code="version_not_found",
            hint=f"List them with GET {PREFIX}/v1/models/{row.owner}/{row.name}/versions.",
        )
    return model


def name_of(row: ReplicateModel) -> str:
    return f"{row.owner}/{row.name}"


def names_of_models(session: Session, model_ids: Sequence[uuid.UUID | None]) -> dict[uuid.UUID, str]:
    """`owner/name` of the Replicate-style model each Lookalike model is a version of, in one query."""
    wanted = {m for m in model_ids if m is not None}
    if not wanted:
        return {}
    rows = session.execute(
        select(Model.id, ReplicateModel.owner, ReplicateModel.name)
        .join(ReplicateModel, ReplicateModel.id == Model.replicate_model_id)
        .where(Model.id.in_(wanted))
    )
    return {model_id: f"{owner}/{name}" for model_id, owner, name in rows}


def model_label(model_id: uuid.UUID, names: dict[uuid.UUID, str]) -> str:
    """`owner/name` of a version; a model trained outside this API is `lookalike/<its id>`."""
    return names.get(model_id) or f"lookalike/{model_id.hex}"


def to_version_read(model: Model) -> VersionRead:
    return VersionRead(
        id=model.id.hex, created_at=model.created_at, cog_version=COG_VERSION, openapi_schema=version_schema()
    )


def to_model_read(session: Session, row: ReplicateModel, settings: Settings) -> ModelRead:
    latest = latest_version(session, row)
    return ModelRead(
        url=f"{settings.public_url.rstrip('/')}{PREFIX}/v1/models/{row.owner}/{row.name}",
        owner=row.owner,
        name=row.name,
        description=row.description,
        visibility=row.visibility,
        run_count=row.run_count,
        latest_version=to_version_read(latest) if latest is not None else None,
    )


def to_file_read(row: UploadedFile, settings: Settings) -> FileRead:
    # `kind` and `family` are the service's own notes on the file, not the user's metadata.
    metadata = {k: v for k, v in (row.meta or {}).items() if k not in ("kind", "family")}
    return FileRead(
        id=row.id.hex,
        name=row.name,
        content_type=row.content_type,
        size=row.size_bytes,
        etag=row.sha256,
        checksums={"sha256": row.sha256},
        metadata=metadata,
        created_at=row.created_at,
        urls={"get": file_url(settings, row)},
    )


def newest_first(query: Select, id_column: Any, *, before: uuid.UUID | None, limit: int = PAGE_SIZE) -> Select:
    """One page, newest first (as Replicate lists), fetching one extra row to know if another follows."""
    query = query.order_by(id_column.desc()).limit(limit + 1)
    return query.where(id_column < before) if before is not None else query


def parse_cursor(cursor: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(cursor) if cursor else None
    except ValueError:
        raise BadRequest(
            "The cursor is not valid.", code="invalid_cursor", hint="Request the list's `next` URL as it is."
        ) from None


def next_url(rows: list[Any], url: str, limit: int = PAGE_SIZE) -> str | None:
    """The `next` URL of a page fetched with limit + 1 rows."""
    return f"{url}?cursor={rows[limit - 1].id.hex}" if len(rows) > limit else None
