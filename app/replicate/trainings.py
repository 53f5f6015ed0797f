"""Trainings: Replicate's `trainings.create` on a zip of photos, run as a native Lookalike training.

The trainer (`owner/name:version`) only picks the base model. The photos become a new subject,
ingested like any upload; the training is queued with `awaiting_photos` and sent to a worker by
the analysis once the photos are judged (`app.trainings.start`). Its weights become a version of
the destination model.
"""

from __future__ import annotations

import tempfile
import uuid
from concurrent.futures import Executor
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from starlette.datastructures import UploadFile

from app.core.errors import NotFound, Unprocessable
from app.db import Photo, PhotoStatus, ReplicateModel, Subject, Training, TrainingStatus
from app.photos.service import upload_photos
from app.replicate import service
from app.replicate.inputs import Context, file_url, input_file
from app.replicate.schemas import TrainingCreate, TrainingRead
from app.subjects.schemas import SubjectCreate
from app.subjects.service import create_subject
from app.trainings import schemas as native
from app.trainings.service import build_training, cancel_training, get_training

TRAINER = "lookalike/lora-trainer"  # its version is the base model: lookalike/lora-trainer:sdxl
# Trainers people call on replicate.com, and the base model each one trains.
KNOWN_TRAINERS = {
    "ostris/flux-dev-lora-trainer": "flux-dev",
    "replicate/fast-flux-trainer": "flux-dev",
    "lucataco/ai-toolkit": "flux-dev",
    "stability-ai/sdxl": "sdxl",
    "replicate/lora-training": "sd15",
    "cloneofsimo/lora-training": "sd15",
}
# Training inputs and the native field each one sets (input_images and class_word are handled apart).
_KNOBS = {
    "steps": "steps",
    "trigger_word": "trigger_word",
    "lora_rank": "rank",
    "learning_rate": "learning_rate",
    "resolution": "resolution",
    "autocaption": "autocaption",
    "seed": "seed",
    "batch_size": "batch_size",
    "gradient_checkpointing": "gradient_checkpointing",
}
INPUT_NAMES = frozenset({"input_images", "class_word", "consent", "consent_version", *_KNOBS})
STATUS = {
    TrainingStatus.queued: "starting",
    TrainingStatus.preparing: "processing",
    TrainingStatus.training: "processing",
    TrainingStatus.assessing: "processing",
    TrainingStatus.succeeded: "succeeded",
    TrainingStatus.failed: "failed",
    TrainingStatus.canceled: "canceled",
}
CONSENT = (
    "Consent: starting this training through the API confirms that you are this person "
    "or have their permission to train a model of them."
)


def base_model_of(owner: str, name: str, version: str) -> str:
    """The base model a trainer trains: Lookalike's own names it in its version; others by their name."""
    trainer = f"{owner}/{name}".lower()
    if trainer == TRAINER:
        return version
    if trainer in KNOWN_TRAINERS:
        return KNOWN_TRAINERS[trainer]
    lowered = name.lower()
    if "flux" in lowered:
        return "flux-dev"
    if "sdxl" in lowered:
        return "sdxl"
    if "sd15" in lowered or "stable-diffusion" in lowered:
        return "sd15"
    raise Unprocessable(
        f"{owner}/{name} is not a trainer this service knows.",
        code="unknown_trainer",
        hint=f"Use {TRAINER}:<base model> (e.g. {TRAINER}:sdxl, {TRAINER}:flux-dev), or a FLUX, SDXL or SD1.5 "
        "trainer such as ostris/flux-dev-lora-trainer.",
    )


def create_training(
    ctx: Context, *, trainer: tuple[str, str, str], body: TrainingCreate, executor: Executor
) -> Training:
    """A new subject from `input_images` and a training of it that starts once its photos are analysed."""
    owner, name, version = trainer
    base = base_model_of(owner, name, version)
    if body.webhook or body.webhook_completed:
        raise Unprocessable(
            "Webhooks are not supported on the Replicate-compatible API.",
            code="webhook_unsupported",
            hint="Leave webhook out and poll with training.reload(), or use the native POST /v1/trainings with "
            "webhook_url.",
        )
    dest_owner, dest_name, _ = service.parse_name(body.destination, field="destination")
    destination = service.get_model(ctx.session, user=ctx.user, owner=dest_owner, name=dest_name)
    input = body.input
    photos = input_file(ctx, input.get("input_images"), field="input_images") if "input_images" in input else None
    if photos is None:
        raise Unprocessable(
            "input.input_images must be a zip of photos (or one photo) you uploaded here, or a data URI.",
            code="input_images_required" if "input_images" not in input else "input_images_refused",
            hint="Pass open('photos.zip', 'rb'): the client uploads it. This service fetches no photos from other "
            "servers.",
        )
    if (photos.meta or {}).get("kind") not in ("zip", "image"):
        raise Unprocessable(
            f"input.input_images ({photos.name}) is neither a zip archive nor an image.",
            code="input_images_refused",
            hint="Zip the photos (JPEG, PNG, WebP or HEIC, with optional same-name .txt captions) and send the zip.",
        )
    if input.get("consent") is not True:
        # As on the native API: the person's photos are not taken without their recorded consent.
        raise Unprocessable(
            "Training a model of a person needs their consent: input.consent must be true.",
            code="consent_required",
            hint="Show the person the statement from GET /v1/consent, then send input consent=True and "
            "consent_version=<its version>.",
        )
    label = service.name_of(destination)
    try:
        subject_data = SubjectCreate(
            name=label[:100],
            class_word=input.get("class_word", "person"),
            consent=True,
            consent_version=input.get("consent_version"),
        )
    except ValidationError as exc:
        raise _invalid(exc, "class_word") from None
    subject = create_subject(ctx.session, user=ctx.user, data=subject_data)
    knobs = {field: input[key] for key, field in _KNOBS.items() if input.get(key) is not None}
    if "resolution" in knobs:
        knobs["resolution"] = _largest(knobs["resolution"])
    try:
        data = native.TrainingCreate(subject_id=subject.id, name=label[:100], base_model=base, **knobs)
    except ValidationError as exc:
        raise _invalid(exc) from None
    training = build_training(
        ctx.session, user=ctx.user, subject=subject, data=data, settings=ctx.settings, awaiting_photos=True
    )
    result = _ingest(ctx, subject, photos.key, photos.name, executor)
    shown = dict(input) | {"input_images": file_url(ctx.settings, photos)}
    training.replicate_model_id = destination.id
    training.client = {
        "api": "replicate",
        "model": f"{owner}/{name}",
        "version": version,
        "input": shown,
        "ignored": [key for key in input if key not in INPUT_NAMES],
        "photos": {
            "accepted": len(result.photos),
            "rejected": [f"{r.filename}: {r.error.get('message')}" for r in result.rejected],
        },
    }
    ctx.session.flush()
    return training


def _ingest(ctx: Context, subject: Subject, key: str, filename: str, executor: Executor) -> Any:
    """The file's photos into the subject, through the same ingestion as an upload (zips unpacked)."""
    with tempfile.SpooledTemporaryFile(max_size=64 * 2**20) as spool:
        size = 0
        for chunk in ctx.storage.iter_chunks(key):
            spool.write(chunk)
            size += len(chunk)
        spool.seek(0)
        upload = UploadFile(file=spool, filename=filename, size=size)  # type: ignore[arg-type]
        return upload_photos(
            ctx.session,
            user=ctx.user,
            subject=subject,
            uploads=[upload],
            settings=ctx.settings,
            storage=ctx.storage,
            executor=executor,
        )


def _largest(value: Any) -> Any:
    """ostris' trainers take "512,768,1024" (buckets trained together); the largest is the resolution here."""
    if isinstance(value, str) and "," in value:
        try:
            return max(int(part) for part in value.split(",") if part.strip())
        except ValueError:
            return value
    return value


def _invalid(exc: ValidationError, field: str | None = None) -> Unprocessable:
    err = exc.errors()[0]
    where = str(err.get("loc", ("",))[0])
    name = field or {v: k for k, v in _KNOBS.items()}.get(where, where)
    return Unprocessable(
        f"input.{name}: {err.get('msg', 'invalid')}",
        code="invalid_input",
        hint="steps 1-20000, lora_rank 1-256, learning_rate 1e-6-1e-2, resolution 64-2048 in steps of 64, "
        "trigger_word 2-32 letters or digits.",
    )


def get(ctx: Context, training_id: str) -> Training:
    try:
        ident = uuid.UUID(training_id)
    except ValueError:
        ident = None
    if ident is None:
        raise NotFound("No such training.", code="training_not_found", hint="List yours with GET /v1/trainings.")
    return get_training(ctx.session, user=ctx.user, training_id=ident)


def cancel(ctx: Context, training: Training) -> Training:
    """Cancel a queued or running training; a finished one is answered as it is, as Replicate does."""
    if STATUS[TrainingStatus(training.status)] in ("succeeded", "failed", "canceled"):
        return training
    return cancel_training(ctx.session, training=training, settings=ctx.settings)


def list_trainings(ctx: Context, *, before: uuid.UUID | None) -> list[Training]:
    """Every training of the caller, newest first: those started through the native API too."""
    query = select(Training).where(Training.user_id == ctx.user.id)
    return list(ctx.session.scalars(service.newest_first(query, Training.id, before=before)))


def to_read(ctx: Context, training: Training, names: dict[uuid.UUID, str]) -> TrainingRead:
    client = training.client or {}
    destination = names.get(training.replicate_model_id) if training.replicate_model_id else None
    output = None
    if training.status == TrainingStatus.succeeded and training.model_id is not None:
        weights = f"{ctx.settings.public_url.rstrip('/')}/v1/models/{training.model_id}/download?format=diffusers"
        output = {"weights": weights, "trigger_word": training.trigger_word}
        if destination:
            output = {"version": f"{destination}:{training.model_id.hex}", **output}
    error = training.error
    base = ctx.api_url(f"/v1/trainings/{training.id.hex}")
    metrics = {}
    if training.started_at and training.finished_at:
        metrics["predict_time"] = _seconds(training.started_at, training.finished_at)
    return TrainingRead(
        id=training.id.hex,
        model=client.get("model", TRAINER),
        version=client.get("version", training.base_model),
        destination=destination,
        status=STATUS[TrainingStatus(training.status)],
        input=client.get("input") or _native_input(training),
        output=output,
        error=" ".join(x for x in (error.get("message"), error.get("hint")) if x) if error else None,
        logs=_logs(ctx, training),
        metrics=metrics,
        created_at=training.created_at,
        started_at=training.started_at,
        completed_at=training.finished_at,
        urls={"get": base, "cancel": f"{base}/cancel"},
    )


def _native_input(training: Training) -> dict[str, Any]:
    p = training.params or {}
    return {
        "subject_id": str(training.subject_id),
        "trigger_word": training.trigger_word,
        "steps": p.get("steps"),
        "lora_rank": p.get("rank"),
        "learning_rate": p.get("learning_rate"),
        "resolution": p.get("resolution"),
    }


def _logs(ctx: Context, training: Training) -> str:
    """Status and progress lines; the last progress line is tqdm-shaped, as Replicate's trainers print."""
    client = training.client or {}
    lines = [f"Ignored unknown input: {key}" for key in client.get("ignored", [])]
    if "photos" in client:
        lines.append(CONSENT)
        lines.append(f"Photos accepted from input_images: {client['photos']['accepted']}")
        lines += [f"Photo rejected: {item}" for item in client["photos"]["rejected"]]
    lines.append(f"Base model {training.base_model}, trigger word {training.trigger_word}")
    if training.awaiting_photos and training.status == TrainingStatus.queued:
        counts = dict(
            ctx.session.execute(
                select(Photo.status, func.count()).where(Photo.subject_id == training.subject_id).group_by(Photo.status)
            ).all()
        )
        done = sum(n for status, n in counts.items() if status != PhotoStatus.pending)
        lines.append(f"Analysing the photos: {done}/{sum(counts.values())} done")
    for phase, at in sorted((training.phases or {}).items(), key=lambda item: item[1]):
        lines.append(f"{at} {phase}")
    progress = training.progress or {}
    total, step = progress.get("total_steps") or 0, progress.get("step") or 0
    if total and step:
        percent = int(100 * step / total)
        bar = "#" * (percent // 10)
        loss = f", loss {progress['loss']:.4f}" if progress.get("loss") is not None else ""
        lines.append(f"{percent:3d}%|{bar:<10}| {step}/{total} [steps{loss}]")
    if training.error:
        lines.append(f"Failed: {training.error.get('message')}")
    if training.status == TrainingStatus.succeeded and training.model_id is not None:
        lines.append(f"Model {training.model_id.hex} ready; prompt with {training.trigger_word}")
    return "\n".join(lines) + "\n"


def _seconds(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds(), 3)


def destination_names(ctx: Context, trainings: list[Training]) -> dict[uuid.UUID, str]:
    """`owner/name` of each training's destination, in one query."""
    wanted = {t.replicate_model_id for t in trainings if t.replicate_model_id}
    if not wanted:
        return {}
    rows = ctx.session.execute(
        select(ReplicateModel.id, ReplicateModel.owner, ReplicateModel.name).where(ReplicateModel.id.in_(wanted))
    )
    return {rid: f"{owner}/{name}" for rid, owner, name in rows}
