"""Predictions: a Replicate-style run of a version, made and kept as a native Generation.

The input maps onto `GenerationCreate`; what the client sent is kept in `Generation.client`
(with the data URIs replaced by the files they were stored as), together with whether outputs
are answered as data URIs, so that every later read answers the same way.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update

from app.core.errors import NotFound, Unprocessable
from app.db import FINISHED_GENERATION, Generation, GenerationStatus, Model, ReplicateModel
from app.generations.schemas import GenerationCreate, LoraRef
from app.generations.service import cancel_generation, create_generation, get_generation
from app.replicate import service
from app.replicate.inputs import Context, file_url, input_file, is_remote_url, our_file_id
from app.replicate.openapi import INPUT_NAMES
from app.replicate.schemas import PredictionRead

# Inputs passed to GenerationCreate as they are.
_DIRECT = (
    "prompt",
    "negative_prompt",
    "lora_scale",
    "num_outputs",
    "aspect_ratio",
    "width",
    "height",
    "output_format",
    "output_quality",
    "guidance_scale",
    "num_inference_steps",
    "seed",
    "prompt_strength",
)
STATUS = {
    GenerationStatus.queued: "starting",
    GenerationStatus.running: "processing",
    GenerationStatus.succeeded: "succeeded",
    GenerationStatus.failed: "failed",
    GenerationStatus.canceled: "canceled",
}


def resolve_version(ctx: Context, ref: str | None) -> tuple[Model, ReplicateModel | None]:
    """The version a prediction runs: a version id (any of your models), or owner/name:version."""
    if not ref:
        raise Unprocessable(
            "Say which version to run.",
            code="version_required",
            hint="Send version (an id, or owner/name:version), or POST /v1/models/{owner}/{name}/predictions.",
        )
    if "/" in ref:
        owner, name, version_id = service.parse_name(ref, field="version")
        row = service.get_model(ctx.session, user=ctx.user, owner=owner, name=name)
        if version_id is None:
            return latest_of(ctx, row), row
        return service.get_version(ctx.session, row=row, version_id=version_id), row
    try:
        model_id = uuid.UUID(ref)
    except ValueError:
        model_id = None
    model = None
    if model_id is not None:
        model = ctx.session.scalar(select(Model).where(Model.id == model_id, Model.user_id == ctx.user.id))
    if model is None:
        raise NotFound(
            f"No version {ref} among yours.",
            code="version_not_found",
            hint="Use the id of one of your trained models, or owner/name:version.",
        )
    row = ctx.session.get(ReplicateModel, model.replicate_model_id) if model.replicate_model_id else None
    return model, row


def latest_of(ctx: Context, row: ReplicateModel) -> Model:
    model = service.latest_version(ctx.session, row)
    if model is None:
        raise NotFound(
            f"{row.owner}/{row.name} has no version yet.",
            code="version_not_found",
            hint=f"Train one with replicate.trainings.create(..., destination='{row.owner}/{row.name}').",
        )
    return model


def create_prediction(
    ctx: Context, *, model: Model, row: ReplicateModel | None, input: dict[str, Any], data_uris: bool
) -> Generation:
    """Queue a generation for `input` on `model`; unknown inputs are ignored with a line in the logs."""
    data, shown = _generation_input(ctx, model, input)
    names = {model.id: service.name_of(row)} if row is not None else {}
    client = {
        "api": "replicate",
        "model": service.model_label(model.id, names),
        "version": model.id.hex,
        "input": shown,
        "data_uris": data_uris,
    }
    generation = create_generation(
        ctx.session, user=ctx.user, data=data, settings=ctx.settings, storage=ctx.storage, client=client
    )
    # Written before the commit that the worker waits for; it appends its own lines after these.
    generation.logs = "".join(f"Ignored unknown input: {name}\n" for name in input if name not in INPUT_NAMES)
    if row is not None:
        ctx.session.execute(
            update(ReplicateModel).where(ReplicateModel.id == row.id).values(run_count=ReplicateModel.run_count + 1)
        )
    ctx.session.flush()
    return generation


def _generation_input(ctx: Context, model: Model, input: dict[str, Any]) -> tuple[GenerationCreate, dict[str, Any]]:
    fields = {k: input[k] for k in _DIRECT if input.get(k) is not None}
    if fields.get("aspect_ratio") == "custom":  # Replicate's way of saying: width and height decide
        del fields["aspect_ratio"]
    shown = dict(input)
    if input.get("image") is not None:
        image = input_file(ctx, input["image"], field="image")
        if image is None:
            raise Unprocessable(
                "input.image must be a file you uploaded here or a data URI: this service fetches no images "
                "from other servers.",
                code="image_url_refused",
                hint="Pass an open file (the client uploads it), or upload it with replicate.files.create.",
            )
        fields["image"], shown["image"] = str(image.id), file_url(ctx.settings, image)
    if input.get("extra_lora"):
        ref, shown["extra_lora"] = _lora_ref(ctx, input["extra_lora"], input.get("extra_lora_scale"))
        fields["loras"] = [ref]
    try:
        return GenerationCreate(model_id=model.id, **fields), shown
    except ValidationError as exc:
        raise invalid_input(exc) from None


def _lora_ref(ctx: Context, value: Any, scale: Any) -> tuple[LoraRef, str]:
    """A LoRA input: a file of yours (URL or data URI), another URL, or owner/name[:version] of yours."""
    try:
        if isinstance(value, str) and (value.startswith("data:") or our_file_id(value, ctx.origins)):
            row = input_file(ctx, value, field="extra_lora")
            return LoraRef(file_id=row.id, scale=scale), file_url(ctx.settings, row)
        if is_remote_url(value):
            return LoraRef(url=value, scale=scale), value
        if isinstance(value, str) and "/" in value:
            owner, name, version_id = service.parse_name(value, field="input.extra_lora")
            row = service.get_model(ctx.session, user=ctx.user, owner=owner, name=name)
            if version_id is None:
                model = latest_of(ctx, row)
            else:
                model = service.get_version(ctx.session, row=row, version_id=version_id)
            return LoraRef(model_id=model.id, scale=scale), value
    except ValidationError as exc:
        raise invalid_input(exc, prefix="input.extra_lora_scale") from None
    raise Unprocessable(
        "input.extra_lora must be a .safetensors URL, a file you uploaded, or owner/name[:version] of one of yours.",
        code="invalid_lora",
        hint="Upload the LoRA with replicate.files.create and pass its urls['get'].",
    )


def invalid_input(exc: ValidationError, prefix: str = "input") -> Unprocessable:
    """A pydantic error on the mapped input, named as the client sent it."""
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err.get("loc", ()))
    name = {"loras": "extra_lora", "model_id": "version"}.get(where.split(".")[0], where)
    field = f"{prefix}.{name}" if name and prefix == "input" else prefix
    return Unprocessable(
        f"{field}: {err.get('msg', 'invalid')}",
        code="invalid_input",
        hint="See the version's openapi_schema (GET /v1/models/{owner}/{name}/versions/{id}) for inputs and ranges.",
    )


def get_prediction(ctx: Context, prediction_id: str) -> Generation:
    try:
        generation_id = uuid.UUID(prediction_id)
    except ValueError:
        generation_id = None
    if generation_id is None:
        raise NotFound("No such prediction.", code="prediction_not_found", hint="List yours with GET /v1/predictions.")
    try:
        return get_generation(ctx.session, user=ctx.user, generation_id=generation_id)
    except NotFound:
        raise NotFound(
            "No such prediction.", code="prediction_not_found", hint="List yours with GET /v1/predictions."
        ) from None


def cancel_prediction(ctx: Context, generation: Generation) -> Generation:
    """Cancel a queued or running prediction; a finished one is answered as it is, as Replicate does."""
    if generation.status in FINISHED_GENERATION:
        return generation
    return cancel_generation(ctx.session, generation=generation)


def list_predictions(ctx: Context, *, before: uuid.UUID | None) -> list[Generation]:
    """Every generation of the caller, newest first: those made through the native API too."""
    query = select(Generation).where(Generation.user_id == ctx.user.id)
    return list(ctx.session.scalars(service.newest_first(query, Generation.id, before=before)))


def to_read(
    ctx: Context, generation: Generation, names: dict[uuid.UUID, str], *, waited: bool = False, inline: bool = True
) -> PredictionRead:
    """The prediction as Replicate answers it. `waited`: the answer to a `Prefer: wait` that ran out, which
    must say `starting` (the client takes any other status as final). `inline`: data URIs where asked for."""
    client = generation.client or {}
    status = STATUS[GenerationStatus(generation.status)]
    if waited and status == "processing":
        status = "starting"
    output = None
    if generation.status == GenerationStatus.succeeded:
        as_data = inline and client.get("data_uris", False)
        output = [_output(ctx, generation, i, o, as_data) for i, o in enumerate(generation.outputs or [])]
    error = generation.error
    base = ctx.api_url(f"/v1/predictions/{generation.id.hex}")
    return PredictionRead(
        id=generation.id.hex,
        model=client.get("model") or _native_model(generation, names),
        version=client.get("version") or (generation.model_id.hex if generation.model_id else generation.base_model),
        status=status,
        input=client.get("input") or {"prompt": generation.prompt},
        output=output,
        error=" ".join(x for x in (error.get("message"), error.get("hint")) if x) if error else None,
        logs=generation.logs or "",
        metrics=_metrics(generation),
        created_at=generation.created_at,
        started_at=generation.started_at,
        completed_at=generation.finished_at,
        urls={"get": base, "cancel": f"{base}/cancel"},
    )


def _native_model(generation: Generation, names: dict[uuid.UUID, str]) -> str:
    if generation.model_id is None:
        return "lookalike/generations"  # only uploaded or remote LoRAs
    return service.model_label(generation.model_id, names)


def _output(ctx: Context, generation: Generation, index: int, out: dict[str, Any], as_data: bool) -> str:
    if as_data:
        data = base64.b64encode(ctx.storage.get(out["key"])).decode()
        return f"data:{out['content_type']};base64,{data}"
    return f"{ctx.settings.public_url.rstrip('/')}/v1/generations/{generation.id}/outputs/{index}"


def _metrics(generation: Generation) -> dict[str, Any]:
    metrics = dict(generation.metrics or {})
    if generation.finished_at is not None:
        metrics["total_time"] = _seconds(generation.created_at, generation.finished_at)
    return metrics


def _seconds(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds(), 3)


def version_names(ctx: Context, generations: list[Generation]) -> dict[uuid.UUID, str]:
    return service.names_of_models(ctx.session, [g.model_id for g in generations if not (g.client or {}).get("model")])
