"""Models (trained LoRAs): read, list, delete, and where their files are."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.service import record
from app.core.errors import NotFound
from app.core.keys import model_prefix
from app.core.pagination import keyset
from app.core.settings import Settings
from app.core.storage import Storage
from app.core.tx import after_commit
from app.db import Model, User
from app.models.schemas import ModelFile, ModelRead, SampleRead
from app.trainings.catalog import TINY_NOTE

FORMATS = ("diffusers", "kohya")


def get_model(session: Session, *, user: User, model_id: uuid.UUID) -> Model:
    model = session.scalar(select(Model).where(Model.id == model_id, Model.user_id == user.id))
    if model is None:
        raise NotFound("No such model.", code="model_not_found", hint="List yours with GET /v1/models.")
    return model


def list_models(session: Session, *, user: User, after: uuid.UUID | None, limit: int) -> list[Model]:
    query = select(Model).where(Model.user_id == user.id)
    return list(session.scalars(keyset(query, Model.id, after=after, limit=limit)))


def delete_model(session: Session, *, model: Model, storage: Storage) -> None:
    """Delete the row; its files go once the deletion has committed."""
    prefix = model_prefix(model.user_id, model.id)
    record(session, action="model_deleted", user_id=model.user_id, target_type="model", target_id=model.id)
    session.delete(model)
    session.flush()
    after_commit(session, lambda: storage.delete_prefix(prefix))


def download_name(model: Model, fmt: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", model.name).strip("_") or "lora"
    return f"{stem}-{model.trigger_word}{'' if fmt == 'diffusers' else '-kohya'}.safetensors"


def to_read(model: Model, settings: Settings) -> ModelRead:
    base = settings.public_url.rstrip("/")
    files = [
        ModelFile(
            format=fmt,
            url=f"{base}/v1/models/{model.id}/download?format={fmt}",
            size_bytes=model.files[fmt]["size_bytes"],
            filename=download_name(model, fmt),
        )
        for fmt in FORMATS
        if fmt in model.files
    ]
    chosen = (model.quality or {}).get("chosen_step")
    samples = [
        SampleRead(
            url=f"{base}/v1/models/{model.id}/samples/{index}",
            step=sample["step"],
            label=sample["label"],
            prompt=sample["prompt"],
            kind=sample["kind"],
            seed=sample["seed"],
            faces=sample["faces"],
            identity_similarity=sample["identity_similarity"],
            memorized=sample["memorized"],
            chosen=sample["step"] == chosen,
        )
        for index, sample in enumerate(model.samples or [])
    ]
    sheet = f"{base}/v1/models/{model.id}/contact-sheet" if "contact_sheet" in model.files else None
    return ModelRead(
        id=model.id,
        training_id=model.training_id,
        subject_id=model.subject_id,
        name=model.name,
        base_model=model.base_model,
        family=model.family,
        trigger_word=model.trigger_word,
        rank=model.rank,
        quality=model.quality,
        samples=samples,
        contact_sheet_url=sheet,
        files=files,
        created_at=model.created_at,
        notice=TINY_NOTE if model.tiny else None,
    )


def image_key(model: Model, which: str | int) -> str:
    """The storage key of a sample (by its index) or of the contact sheet ("contact_sheet")."""
    if which == "contact_sheet":
        key = (model.files.get("contact_sheet") or {}).get("key")
    else:
        samples = model.samples or []
        key = samples[which]["key"] if isinstance(which, int) and 0 <= which < len(samples) else None
    if not key:
        raise NotFound("No such image for this model.", code="image_not_found", hint="See the model's samples list.")
    return key
