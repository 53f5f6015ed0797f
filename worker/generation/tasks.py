"""`generation.run`: claim a queued generation, render its plan on the process's engine, store the images.

As with trainings, the row is the truth: a worker claims it with a conditional update that takes
a lease (a token and a heartbeat renewed while it runs); every later write is conditional on that
token and on `running`, so a cancel or the sweep taking the job back (a dead worker) wins, and
the next image is not rendered. A generation is short and has no checkpoint: a job whose worker
died is simply run again from the start (`worker.generation.recovery`).
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from threading import Event
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from PIL import Image
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import retried, session_factory, session_scope
from app.core.keys import generation_prefix
from app.core.queue import GENERATE
from app.core.settings import Settings, get_settings
from app.core.storage import Storage, get_storage
from app.db import Generation, GenerationStatus
from app.db.base import utcnow
from app.generations.params import EXTENSIONS, OUTPUT_FORMATS
from worker.generation.engine import GenerationError, ImageJob, encode_output, get_engine
from worker.generation.sheet import experiment_sheet
from worker.generation.sources import lora_sources
from worker.jobs import Heartbeat
from worker.lifecycle import stopping

log = logging.getLogger(__name__)


class _Stop(Exception):
    """The job is no longer ours: canceled, deleted, or taken back by the sweep."""


class _HandBack(Exception):
    """The worker is shutting down: give the job back for the next worker."""


@dataclass
class _Job:
    id: uuid.UUID
    user_id: uuid.UUID
    token: str
    row: dict[str, Any] = field(default_factory=dict)


def run_generation(
    generation_id: uuid.UUID, *, sessions: sessionmaker[Session], storage: Storage, settings: Settings
) -> str:
    """Render one generation to its end; returns the status it ended in (or why nothing was done)."""
    job = _claim(generation_id, sessions)
    if isinstance(job, str):
        return job
    written: list[str] = []
    beat = Heartbeat(
        partial(_renew, sessions, job), every=max(0.2, settings.generation_lease_s / 6), name=f"lease-{job.id}"
    )
    with beat:
        try:
            outputs, sheet, metrics, logs = _render(job, beat.lost, storage=storage, settings=settings, written=written)
            if _finish(sessions, job, outputs=outputs, sheet_key=sheet, metrics=metrics, logs=logs):
                return "succeeded"
            outcome = "canceled"
        except _Stop:
            outcome = "canceled"
        except _HandBack:
            _release(sessions, job)
            outcome = "handed back"
        except SoftTimeLimitExceeded:
            _fail(sessions, job, TIME_LIMIT_ERROR)
            outcome = "failed"
        except GenerationError as exc:
            _fail(sessions, job, exc.as_dict())
            outcome = "failed"
        except Exception as exc:  # noqa: BLE001 - every failure ends in `failed`, never a traceback to the user
            error = _unexpected(exc)
            if error["code"] == "internal_error":
                log.exception("generation %s failed", job.id)
            _fail(sessions, job, error)
            outcome = "failed"
    _delete(storage, written)  # the images of a generation that did not succeed are not kept
    return outcome


def _render(
    job: _Job, lost: Event, *, storage: Storage, settings: Settings, written: list[str]
) -> tuple[list[dict[str, Any]], str | None, dict[str, Any], list[str]]:
    row = job.row
    p = row["params"]
    logs = [f"Using seed: {p['seed']}"]
    started = time.perf_counter()
    start_image = None
    if row["image_key"]:
        try:
            start_image = Image.open(io.BytesIO(storage.get(row["image_key"]))).convert("RGB")
        except Exception:  # noqa: BLE001 - a missing or unreadable start image is the request's problem
            raise GenerationError(
                "start_image_missing",
                "The start image is no longer in storage.",
                "Send the request again with the image.",
            ) from None
    jobs = [
        ImageJob(
            prompt=image["prompt"],
            negative_prompt=p["negative_prompt"],
            seed=int(image["seed"]),
            width=int(p["width"]),
            height=int(p["height"]),
            steps=int(p["num_inference_steps"]),
            guidance=float(p["guidance_scale"]),
            scales=tuple(float(s) for s in image["scales"]),
            image=start_image,
            strength=float(p["prompt_strength"] or 0.8),
        )
        for image in p["images"]
    ]
    sources = lora_sources(row["loras"], storage=storage, settings=settings)
    fmt, quality = p["output_format"], int(p["output_quality"])
    prefix = generation_prefix(job.user_id, job.id)
    outputs: list[dict[str, Any]] = []
    images: list[Image.Image] = []

    def tick() -> None:
        if stopping():
            raise _HandBack()
        if lost.is_set():
            raise _Stop()

    def each(index: int, image: Image.Image) -> None:
        data = encode_output(image, fmt, quality)
        key = f"{prefix}output-{index:02d}.{EXTENSIONS[fmt]}"
        storage.put(key, data, content_type=OUTPUT_FORMATS[fmt])
        written.append(key)
        plan = p["images"][index]
        outputs.append(
            {
                "key": key,
                "content_type": OUTPUT_FORMATS[fmt],
                "size_bytes": len(data),
                "seed": plan["seed"],
                "label": plan.get("label"),
                "lora_scale": plan.get("lora_scale"),
                "prompt": plan["prompt"],
            }
        )
        if row["kind"] != "images":
            images.append(image)

    engine = get_engine(settings)
    engine.generate(p["source"], row["family"], sources, jobs, each=each, tick=tick)
    last = engine.last
    load_s, swap_s, renders = float(last.load_s), float(last.swap_s), [float(x) for x in last.render_s]
    logs.append(f"Base model {row['base_model']}: " + (f"loaded in {load_s:.2f} s" if load_s else "already loaded"))
    logs.append(f"LoRA weights ready in {swap_s:.3f} s")
    for index, seconds in enumerate(renders):
        logs.append(f"Image {index + 1}/{len(renders)} in {seconds:.2f} s")
    sheet_key = None
    if images:
        sheet = experiment_sheet(row["kind"], p, images)
        sheet_key = f"{prefix}contact_sheet.jpg"
        storage.put(sheet_key, sheet, content_type="image/jpeg")
        written.append(sheet_key)
    metrics = {
        "predict_time": round(time.perf_counter() - started, 3),
        "load_time": round(load_s, 3),
        "lora_swap_time": round(swap_s, 3),
        "image_times": [round(x, 3) for x in renders],
    }
    return outputs, sheet_key, metrics, logs


def _renew(sessions: sessionmaker[Session], job: _Job) -> bool:
    """Renew the lease; False once the job is canceled, deleted or taken back by the sweep."""
    with session_scope(sessions) as session:
        return bool(session.execute(_owned(job).values(heartbeat_at=utcnow())).rowcount)


@retried
def _claim(generation_id: uuid.UUID, sessions: sessionmaker[Session]) -> _Job | str:
    token = uuid.uuid4().hex
    now = utcnow()
    with session_scope(sessions) as session:
        claimed = session.execute(
            update(Generation)
            .where(Generation.id == generation_id, Generation.status == GenerationStatus.queued)
            .where(Generation.worker_token.is_(None))
            .values(
                status=GenerationStatus.running,
                worker_token=token,
                heartbeat_at=now,
                attempts=Generation.attempts + 1,
                started_at=now,
            )
        ).rowcount
        row = session.get(Generation, generation_id)
        if row is None:
            return "gone"
        if not claimed:
            return f"already {row.status}"
        data = {
            "params": dict(row.params),
            "loras": list(row.loras),
            "image_key": row.image_key,
            "kind": row.kind,
            "family": row.family,
            "base_model": row.base_model,
            "logs": row.logs or "",
        }
        return _Job(row.id, row.user_id, token, data)


def _owned(job: _Job):  # noqa: ANN202
    return (
        update(Generation)
        .where(Generation.id == job.id, Generation.worker_token == job.token)
        .where(Generation.status == GenerationStatus.running)
    )


@retried
def _finish(
    sessions: sessionmaker[Session],
    job: _Job,
    *,
    outputs: list[dict[str, Any]],
    sheet_key: str | None,
    metrics: dict[str, Any],
    logs: list[str],
) -> bool:
    with session_scope(sessions) as session:
        done = session.execute(
            _owned(job).values(
                status=GenerationStatus.succeeded,
                outputs=outputs,
                sheet_key=sheet_key,
                metrics=metrics,
                logs=_joined(job, logs),
                finished_at=utcnow(),
                worker_token=None,
            )
        ).rowcount
        if done:
            return True
        row = session.get(Generation, job.id)
        # A first try whose commit went through but whose answer was lost looks like this too.
        return row is not None and row.status == GenerationStatus.succeeded and row.outputs == outputs


def _joined(job: _Job, lines: list[str]) -> str:
    return "\n".join(x for x in (job.row.get("logs", "").rstrip("\n"), *lines) if x) + "\n"


@retried
def _fail(sessions: sessionmaker[Session], job: _Job, error: dict[str, str]) -> None:
    with session_scope(sessions) as session:
        session.execute(
            _owned(job).values(
                status=GenerationStatus.failed,
                error=error,
                logs=_joined(job, [f"Failed: {error['message']}"]),
                finished_at=utcnow(),
                worker_token=None,
            )
        )
    log.warning("generation %s failed: %s", job.id, error["code"])


@retried
def _release(sessions: sessionmaker[Session], job: _Job) -> None:
    """Back to `queued` with no message on its way: the next sweep sends it again."""
    from worker.housekeeping.registry import NO_MESSAGE

    with session_scope(sessions) as session:
        session.execute(
            _owned(job).values(
                status=GenerationStatus.queued, worker_token=None, heartbeat_at=None, dispatched_at=NO_MESSAGE
            )
        )


def _delete(storage: Storage, keys: list[str]) -> None:
    for key in keys:
        storage.delete(key)


TIME_LIMIT_ERROR = {
    "code": "time_limit_exceeded",
    "message": "The generation ran longer than the worker's time limit.",
    "hint": "Ask for fewer images, fewer steps or a smaller size.",
}


def _unexpected(exc: Exception) -> dict[str, str]:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return {
            "code": "out_of_gpu_memory",
            "message": "The GPU ran out of memory.",
            "hint": "Ask for a smaller size or fewer LoRAs at once.",
        }
    return {
        "code": "internal_error",
        "message": "The generation failed unexpectedly.",
        "hint": "Try again; if it fails again, report this generation's id to the operator.",
    }


# Eight FLUX.1-dev images at 1024 px take about two minutes on an H100; fifteen allow slow GPUs and a model load.
TIME_LIMIT_S = 15 * 60


@shared_task(name=GENERATE, acks_late=True, soft_time_limit=TIME_LIMIT_S, time_limit=TIME_LIMIT_S + 60)
def run_generation_task(generation_id: str) -> str:
    """Celery entry point: ids in, never objects."""
    outcome = run_generation(
        uuid.UUID(generation_id), sessions=session_factory(), storage=get_storage(), settings=get_settings()
    )
    log.info("generation.run %s: %s", generation_id, outcome)
    return outcome
