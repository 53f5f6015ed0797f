"""Creating, reading, waiting for and canceling generations. Services flush; the request commits.

Everything a request can get wrong is found here, before anything is queued: unknown or foreign
LoRAs, a LoRA of another family than the base, a refused prompt, a start image that is not an
image. The worker then only renders the plan stored in `params["images"]`.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.audit.service import record
from app.core.db import session_scope
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.keys import generation_prefix
from app.core.pagination import keyset
from app.core.queue import GENERATE, enqueue
from app.core.settings import Settings
from app.core.storage import Storage
from app.core.tx import after_rollback, commit_now
from app.db import ACTIVE_GENERATION, FINISHED_GENERATION, Generation, GenerationStatus, Model, Photo, Subject, User
from app.db.base import utcnow
from app.files.service import get_file
from app.generations import params
from app.generations.policy import check_prompts
from app.generations.schemas import GenerationCreate, GenerationRead, LoraRef, OutputRead
from app.notify.webhooks import TargetRefused, check_target
from app.photos.ingest import Candidate, Rejected, prepare_image
from app.trainings import catalog
from app.trainings.service import base_model_named, check_runnable


def create_generation(
    session: Session,
    *,
    user: User,
    data: GenerationCreate,
    settings: Settings,
    storage: Storage,
    client: dict[str, Any] | None = None,
) -> Generation:
    """Check the request against the user's models, files and the prompt policy, then queue it."""
    refs = ([LoraRef(model_id=data.model_id)] if data.model_id else []) + list(data.loras)
    loras = [_lora(session, user, ref, data.lora_scale, storage, settings) for ref in refs]
    first_model = next((x for x in loras if x["kind"] == "model"), None)
    base_name = data.base_model or (first_model["base_model"] if first_model else None)
    if base_name is None:
        raise Unprocessable(
            "Say which base model to generate with: none of the LoRAs is one of your models.",
            code="base_model_required",
            hint="Add base_model (e.g. sdxl, flux-dev, or the base the LoRA was trained on).",
        )
    base = base_model_named(base_name)
    check_runnable(base, settings)
    for lora in loras:
        if lora.get("family") and lora["family"] != base.family:
            raise Unprocessable(
                f"The LoRA {lora['name']} is for {_label(lora['family'])} and the base model {base.name} is "
                f"{_label(base.family)}: a LoRA only works on the family it was trained for.",
                code="lora_family_mismatch",
                hint=f"Use a {_label(lora['family'])} base model, or LoRAs trained on {_label(base.family)}.",
            )

    prompt, inserted = data.prompt, False
    if first_model is not None:
        prompt, inserted = params.with_trigger(data.prompt, first_model["trigger_word"], first_model["class_word"])
    images = _plan(data, prompt, loras)
    check_prompts(sorted({image["prompt"] for image in images}), settings)

    width, height = params.image_size(
        base.family, tiny=base.tiny, width=data.width, height=data.height, aspect_ratio=data.aspect_ratio
    )
    sampler = params.sampler(
        base.family,
        tiny=base.tiny,
        steps=data.num_inference_steps,
        guidance=data.guidance_scale,
        negative=data.negative_prompt,
    )
    generation = Generation(
        user_id=user.id,
        model_id=uuid.UUID(first_model["id"]) if first_model else None,
        kind="sweep" if data.sweep else "matrix" if data.matrix else "images",
        base_model=base.name,
        family=base.family,
        tiny=base.tiny,
        prompt=data.prompt,
        trigger_inserted=inserted,
        params={
            "source": base.source,
            "prompt": prompt,
            "negative_prompt": sampler.negative_prompt,
            "width": width,
            "height": height,
            "num_inference_steps": sampler.steps,
            "guidance_scale": sampler.guidance,
            "seed": images[0]["seed"],
            "num_outputs": data.num_outputs,
            "lora_scale": data.lora_scale,
            "prompt_strength": data.prompt_strength if data.image else None,
            "output_format": data.output_format,
            "output_quality": data.output_quality,
            "sweep": data.sweep.scales if data.sweep else None,
            "matrix": data.matrix.model_dump() if data.matrix else None,
            "images": images,
        },
        loras=[{k: v for k, v in x.items() if k not in ("base_model", "class_word")} for x in loras],
        status=GenerationStatus.queued,
        outputs=[],
        logs="",
        metrics={},
        client=client,
    )
    session.add(generation)
    session.flush()
    if data.image is not None:
        generation.image_key = _start_image(session, user, data.image, generation, settings, storage)
    details = {"kind": generation.kind, "base_model": generation.base_model, "model_id": generation.model_id}
    record(
        session,
        action="generation_created",
        user_id=user.id,
        target_type="generation",
        target_id=generation.id,
        details=details,
    )
    enqueue(session, GENERATE, str(generation.id))
    return generation


def _label(family: str) -> str:
    return catalog.FAMILIES[family].label


def _plan(data: GenerationCreate, prompt: str, loras: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every image to render, in order: its prompt, seed, per-LoRA scales and label."""
    seed = data.seed if data.seed is not None else secrets.randbelow(2**32)
    scales = [x["scale"] for x in loras]
    images = []
    for i in range(data.num_outputs):
        image_seed = (seed + i) % 2**32
        if data.sweep:
            for scale in data.sweep.scales:
                row = {"prompt": prompt, "seed": image_seed, "scales": [scale, *scales[1:]], "label": f"{scale:g}"}
                images.append(row | {"lora_scale": scale})
        elif data.matrix:
            for value in data.matrix.values:
                text = prompt.replace("{" + data.matrix.name + "}", value)
                images.append({"prompt": text, "seed": image_seed, "scales": scales, "label": value})
        else:
            images.append({"prompt": prompt, "seed": image_seed, "scales": scales, "label": None})
    if len(images) > params.MAX_IMAGES:
        raise Unprocessable(
            f"That is {len(images)} images in one request; the most is {params.MAX_IMAGES}.",
            code="too_many_images",
            hint="Lower num_outputs, or use fewer sweep scales or matrix values.",
        )
    return images


def _lora(
    session: Session, user: User, ref: LoraRef, default_scale: float, storage: Storage, settings: Settings
) -> dict[str, Any]:
    """What the worker needs to load one LoRA, checked as far as the API can."""
    scale = ref.scale if ref.scale is not None else default_scale
    if ref.model_id is not None:
        model = session.scalar(select(Model).where(Model.id == ref.model_id, Model.user_id == user.id))
        if model is None:
            raise NotFound(
                f"No such model: {ref.model_id}.", code="model_not_found", hint="List yours with GET /v1/models."
            )
        subject = session.get(Subject, model.subject_id) if model.subject_id else None
        return {
            "kind": "model",
            "id": str(model.id),
            "name": model.name,
            "key": model.files["diffusers"]["key"],
            "adapter": f"m{model.id.hex}",
            "scale": scale,
            "family": model.family,
            "trigger_word": model.trigger_word,
            "base_model": model.base_model,
            "class_word": subject.class_word if subject else "person",
        }
    if ref.file_id is not None:
        row = get_file(session, user=user, file_id=ref.file_id)
        if (row.meta or {}).get("kind") != "lora":
            raise Unprocessable(
                f"The file {row.name} is not a LoRA.",
                code="not_a_lora",
                hint="Upload the LoRA's .safetensors file with POST /v1/files and use that id.",
            )
        return {
            "kind": "file",
            "id": str(row.id),
            "name": row.name,
            "key": row.key,
            "adapter": f"f{row.sha256[:24]}",
            "scale": scale,
            "family": (row.meta or {}).get("family"),
        }
    url = str(ref.url)
    try:
        check_target(
            url,
            allow_private=settings.lora_allow_private_urls,
            label="the LoRA url",
            allow_hint="(or set LOOKALIKE_LORA_ALLOW_PRIVATE_URLS=true on a private network)",
        )
    except TargetRefused as exc:
        raise Unprocessable(exc.reason, code="lora_url_refused", hint="Use a public https URL.") from None
    return {"kind": "url", "url": url, "name": url.rsplit("/", 1)[-1][:100] or url, "scale": scale, "family": None}


def _start_image(
    session: Session, user: User, ref: str, generation: Generation, settings: Settings, storage: Storage
) -> str:
    """Copy the img2img start image (one of your photos, or an uploaded image file) beside the outputs.

    A photo is named in `start_photo_id`: deleting it, or its subject, deletes the generation too.
    """
    try:
        ident = uuid.UUID(ref)
    except ValueError:
        raise Unprocessable(
            "image must be the id of one of your photos or of an image you uploaded with POST /v1/files.",
            code="invalid_image",
            hint="Upload the start image with POST /v1/files and pass its id.",
        ) from None
    # The key-share lock (Postgres) holds off the photo's deletion until this generation has committed, so
    # that the deletion then finds it by `start_photo_id`; a photo deleted first is not found here.
    query = select(Photo).where(Photo.id == ident, Photo.user_id == user.id).with_for_update(read=True, key_share=True)
    photo = session.scalar(query)
    if photo is not None:
        from app.photos.service import image_key

        data, name = storage.get(image_key(photo, "original")), photo.filename
        generation.start_photo_id = photo.id
    else:
        row = get_file(session, user=user, file_id=ident)
        data, name = storage.get(row.key), row.name
    try:
        prepared = prepare_image(Candidate(name, data), settings)
    except Rejected as exc:
        raise Unprocessable(exc.message, code=exc.code, hint=exc.hint) from None
    key = f"{generation_prefix(user.id, generation.id)}input.{prepared.original_ext}"
    storage.put(key, prepared.original, content_type=prepared.original_type)
    after_rollback(session, lambda: storage.delete(key))
    return key


def get_generation(session: Session, *, user: User, generation_id: uuid.UUID) -> Generation:
    row = session.scalar(select(Generation).where(Generation.id == generation_id, Generation.user_id == user.id))
    if row is None:
        raise NotFound("No such generation.", code="generation_not_found", hint="List yours with GET /v1/generations.")
    return row


def list_generations(session: Session, *, user: User, after: uuid.UUID | None, limit: int) -> list[Generation]:
    query = select(Generation).where(Generation.user_id == user.id)
    return list(session.scalars(keyset(query, Generation.id, after=after, limit=limit)))


def cancel_generation(session: Session, *, generation: Generation) -> Generation:
    """Mark it canceled; a running worker stops before its next image."""
    if generation.status in FINISHED_GENERATION:
        raise Conflict(
            f"The generation has already {generation.status}.",
            code="generation_finished",
            hint="Only queued or running generations can be canceled.",
        )
    session.execute(
        update(Generation)
        .where(Generation.id == generation.id, Generation.status.in_(ACTIVE_GENERATION))
        .values(status=GenerationStatus.canceled, finished_at=utcnow())
    )
    session.flush()
    session.refresh(generation)
    return generation


def wait_for(sessions: sessionmaker[Session], generation_id: uuid.UUID, seconds: float) -> None:
    """Return once the generation has finished, or after `seconds` (the `Prefer: wait` answer)."""
    deadline = time.monotonic() + seconds
    delay = 0.05
    while True:
        with session_scope(sessions) as session:
            status = session.scalar(select(Generation.status).where(Generation.id == generation_id))
        if status is None or status in FINISHED_GENERATION or time.monotonic() >= deadline:
            return
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.25)


def settle(session: Session, sessions: sessionmaker[Session], generation_id: uuid.UUID, seconds: float) -> Generation:
    """Commit now, wait up to `seconds` for the generation to finish, and read it again: `Prefer: wait`.

    The one place a service commits: the worker must see the row, and its message must leave, before we wait.
    """
    commit_now(session)
    wait_for(sessions, generation_id, seconds)
    session.expire_all()
    return session.get_one(Generation, generation_id)


def prefer_wait(header: str | None, settings: Settings) -> float | None:
    """Seconds to hold the request for `Prefer: wait` / `Prefer: wait=N` (RFC 7240), None without it."""
    if not header:
        return None
    for part in header.split(","):
        token = part.strip().split(";")[0].strip()
        name, _, value = token.partition("=")
        if name.strip().lower() != "wait":
            continue
        try:
            asked = float(value) if value else settings.generation_max_wait_s
        except ValueError:
            asked = settings.generation_max_wait_s
        return max(0.0, min(asked, settings.generation_max_wait_s))
    return None


def output_key(generation: Generation, index: int | str) -> str:
    """The storage key of output `index`, or of the contact sheet ("contact_sheet")."""
    if index == "contact_sheet":
        key = generation.sheet_key
    else:
        outputs = generation.outputs or []
        key = outputs[index]["key"] if isinstance(index, int) and 0 <= index < len(outputs) else None
    if not key:
        raise NotFound(
            "No such output for this generation.", code="output_not_found", hint="See the generation's outputs list."
        )
    return key


def to_read(generation: Generation, settings: Settings) -> GenerationRead:
    base = f"{settings.public_url.rstrip('/')}/v1/generations/{generation.id}"
    p = generation.params
    outputs = [
        OutputRead(
            url=f"{base}/outputs/{i}",
            content_type=o["content_type"],
            seed=o["seed"],
            label=o.get("label"),
            lora_scale=o.get("lora_scale"),
            prompt=o["prompt"],
        )
        for i, o in enumerate(generation.outputs or [])
    ]
    shown = {k: p[k] for k in SHOWN_SETTINGS if p.get(k) is not None}
    return GenerationRead(
        id=generation.id,
        status=generation.status,
        model_id=generation.model_id,
        kind=generation.kind,
        base_model=generation.base_model,
        family=generation.family,
        prompt=p["prompt"],
        trigger_word_inserted=generation.trigger_inserted,
        settings=shown,
        loras=[
            {k: x[k] for k in ("kind", "id", "url", "name", "scale") if x.get(k) is not None} for x in generation.loras
        ],
        outputs=outputs,
        contact_sheet_url=f"{base}/contact-sheet" if generation.sheet_key else None,
        error=generation.error,
        metrics=generation.metrics or {},
        created_at=generation.created_at,
        started_at=generation.started_at,
        finished_at=generation.finished_at,
        notice=catalog.TINY_NOTE if generation.tiny else None,
    )


# Failures the request itself caused (answered 422 by the synchronous endpoint); others are the server's.
USER_ERRORS = ("lora_mismatch", "lora_unreadable", "lora_download_failed", "start_image_missing", "generation_canceled")

SHOWN_SETTINGS = (
    "negative_prompt",
    "width",
    "height",
    "num_inference_steps",
    "guidance_scale",
    "seed",
    "num_outputs",
    "lora_scale",
    "prompt_strength",
    "output_format",
    "output_quality",
    "sweep",
    "matrix",
)
