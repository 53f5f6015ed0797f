"""`training.run`: claim the job, prepare the photos, train, export, and record the model.

The training row is the truth. A worker claims it with a conditional update that also
takes a lease (a token and a heartbeat renewed by a background thread). A copy of the
message that arrives while the lease is held does nothing. A worker that shuts down saves a
checkpoint, gives the lease back and sends the job again; a worker that dies leaves its lease
to go stale, and the housekeeping sweep (`worker.training.recovery`) hands the job on. Either
way the next worker resumes from the latest checkpoint. Every write is conditional on the
token and on the status, so a cancel (or a lost lease) stops the loop at its next write.
"""

from __future__ import annotations

import io
import logging
import threading
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import retried, session_factory, session_scope
from app.core.queue import TRAIN_MODEL
from app.core.settings import Settings, get_settings
from app.core.storage import ObjectNotFound, Storage, get_storage, photo_key
from app.db import RUNNING_TRAINING, LoraModel, Photo, PhotoStatus, Subject, Training, TrainingStatus
from app.db.base import utcnow
from app.loras.service import model_prefix
from app.photos.reasons import REJECTED
from app.photos.service import training_caption
from app.trainings import trigger
from worker.housekeeping.registry import NO_MESSAGE
from worker.lifecycle import stopping
from worker.training.data import TrainItem, face_in_crop
from worker.training.errors import Canceled, Interrupted, TrainingError
from worker.training.export import diffusers_file, kohya_file, metadata
from worker.training.trainer import Hooks, Progress, TrainConfig, train

log = logging.getLogger(__name__)


# A FLUX.1-dev run of 4,000 steps at 1024 px takes about an hour on an H100; six allows slow GPUs.
TIME_LIMIT_S = 6 * 3600


def training_prefix(user_id: uuid.UUID, training_id: uuid.UUID) -> str:
    return f"users/{user_id}/trainings/{training_id}/"


class StorageStore:
    """The trainer's BlobStore on object storage, under the training's prefix."""

    def __init__(self, storage: Storage, prefix: str) -> None:
        self.storage, self.prefix = storage, prefix

    def get(self, name: str) -> bytes | None:
        try:
            return self.storage.get(self.prefix + name)
        except ObjectNotFound:
            return None

    def put(self, name: str, data: bytes) -> None:
        self.storage.put(self.prefix + name, data)  # atomic: temp file + rename, or one S3 PUT

    def list(self, prefix: str) -> list[str]:
        return [k[len(self.prefix) :] for k in self.storage.list(self.prefix + prefix)]

    def delete(self, name: str) -> None:
        self.storage.delete(self.prefix + name)


@dataclass
class _Job:
    id: uuid.UUID
    user_id: uuid.UUID
    subject_id: uuid.UUID
    token: str


class _Lease:
    """Renews the heartbeat in a thread while the job runs, even while a model loads."""

    def __init__(self, job: _Job, sessions: sessionmaker[Session], every: float) -> None:
        self.job, self.sessions, self.every = job, sessions, every
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job.id}", daemon=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                with session_scope(self.sessions) as session:
                    renewed = session.execute(
                        update(Training)
                        .where(Training.id == self.job.id, Training.worker_token == self.job.token)
                        .where(Training.status.in_(RUNNING_TRAINING))
                        .values(heartbeat_at=utcnow())
                    ).rowcount
                if not renewed:
                    self.lost.set()  # canceled, deleted, or taken over
                    return
            except Exception:  # noqa: BLE001 - a database blip must not kill the run; the next beat retries
                log.warning("heartbeat for training %s failed", self.job.id, exc_info=True)


def run_training(
    training_id: uuid.UUID,
    *,
    sessions: sessionmaker[Session],
    storage: Storage,
    settings: Settings,
    on_step: Any = None,
) -> str:
    """Run one training job to its end; returns the status it ended in (or why nothing was done).

    `on_step(progress)` is a test seam called at each progress write, after the database one.
    """
    job = _claim(training_id, sessions)
    if isinstance(job, str):
        return job
    with _Lease(job, sessions, settings.training_heartbeat_s) as lease:
        try:
            return _run(job, lease, sessions=sessions, storage=storage, settings=settings, on_step=on_step)
        except Canceled as exc:
            log.info("training %s stopped at step %d: canceled", job.id, exc.step)
            _cleanup(storage, job)
            return "canceled"
        except Interrupted as exc:
            _hand_back(sessions, job)
            log.info("training %s handed back at step %d: the worker is shutting down", job.id, exc.step)
            return "handed back"
        except SoftTimeLimitExceeded:
            _fail(sessions, job, TIME_LIMIT_ERROR)
            return "failed"
        except TrainingError as exc:
            _fail(sessions, job, exc.as_dict())
            return "failed"
        except Exception as exc:  # noqa: BLE001 - every failure ends in `failed`, never a traceback to the user
            error = _unexpected(exc)
            if error["code"] == "internal_error":
                log.exception("training %s failed", job.id)
            _fail(sessions, job, error)
            return "failed"
        finally:
            _free_gpu()


@retried
def _claim(training_id: uuid.UUID, sessions: sessionmaker[Session]) -> _Job | str:
    """Take the job if it is queued, or running with no lease (handed back, or released by the sweep)."""
    token = uuid.uuid4().hex
    now = utcnow()
    if stopping():
        return _leave_for_next_worker(training_id, sessions)
    with session_scope(sessions) as session:
        claimed = session.execute(
            update(Training)
            .where(Training.id == training_id, Training.worker_token.is_(None))
            .where(Training.status.in_((TrainingStatus.queued, *RUNNING_TRAINING)))
            .values(
                worker_token=token,
                heartbeat_at=now,
                attempts=Training.attempts + 1,
                status=TrainingStatus.preparing,
            )
        ).rowcount
        row = session.get(Training, training_id)
        if row is None:
            return "gone"
        if not claimed:
            # Held by a live worker, or by a dead one until the sweep sees its lease go stale.
            return "running elsewhere" if row.status in RUNNING_TRAINING else f"already {row.status}"
        phases = dict(row.phases or {})
        phases.setdefault("preparing", now.isoformat())
        row.phases = phases
        if row.started_at is None:
            row.started_at = now
        return _Job(row.id, row.user_id, row.subject_id, token)


@retried
def _leave_for_next_worker(training_id: uuid.UUID, sessions: sessionmaker[Session]) -> str:
    """A message taken while this worker shuts down: drop it, and let the sweep know none is on its way."""
    with session_scope(sessions) as session:
        session.execute(
            update(Training)
            .where(Training.id == training_id, Training.worker_token.is_(None))
            .where(Training.status.in_((TrainingStatus.queued, *RUNNING_TRAINING)))
            .values(dispatched_at=NO_MESSAGE, resends=0)
        )
    return "left for the next worker"


def _run(
    job: _Job, lease: _Lease, *, sessions: sessionmaker[Session], storage: Storage, settings: Settings, on_step: Any
) -> str:
    with session_scope(sessions) as session:
        row = session.get(Training, job.id)
        subject = session.get(Subject, job.subject_id)
        if row is None or subject is None:
            raise Canceled(0)
        params, family, trigger_word = dict(row.params), row.family, row.trigger_word
        generated, base_model, name, tiny = row.trigger_generated, row.base_model, row.name, row.tiny
        items = _items(session, storage, subject, trigger_word, settings)

    source = params["source"]
    if tiny and not source.startswith("/"):
        from worker.training.presets import ensure_tiny

        source = str(ensure_tiny(source, settings.resolved_models_dir))
    config = TrainConfig(
        family=family,
        source=source,
        steps=int(params["steps"]),
        learning_rate=float(params["learning_rate"]),
        rank=int(params["rank"]),
        resolution=int(params["resolution"]),
        multires=tuple(params.get("multires") or (1.0,)),
        batch_size=params.get("batch_size"),
        seed=int(params["seed"]),
        face_weight=float(params.get("face_weight", 3.0)),
        gradient_checkpointing=bool(params.get("gradient_checkpointing")),
        checkpoint_every=int(params.get("checkpoint_every") or settings.checkpoint_every),
        progress_every_s=settings.training_progress_s,
    )
    store = StorageStore(storage, training_prefix(job.user_id, job.id))

    def alive() -> bool:
        return not lease.lost.is_set()

    def phase(name_: str) -> None:
        if stopping():
            raise Interrupted(0)
        if name_ == "training":
            _advance(sessions, job, TrainingStatus.preparing, TrainingStatus.training)
        elif not alive():
            raise Canceled(0)

    def progress(p: Progress) -> bool:
        ok = _write_progress(sessions, job, p)
        if on_step is not None:
            on_step(p)
        return ok and alive()

    if generated:
        trigger_word = _check_trigger(job, sessions, config, trigger_word)

    result = train(items, config, Hooks(progress=progress, phase=phase, store=store, should_stop=stopping))

    _advance(sessions, job, TrainingStatus.training, TrainingStatus.assessing)
    # The quality assessment hooks in here; until it exists, the final LoRA is the result.
    model_id = uuid.uuid4()
    settings_meta = {k: v for k, v in params.items() if k != "source"} | {"batch_size": result.batch_size}
    meta = metadata(
        family=family,
        base_model=base_model,
        trigger_word=trigger_word,
        name=name,
        rank=result.rank,
        alpha=result.alpha,
        settings=settings_meta,
    )
    prefix = model_prefix(job.user_id, model_id)
    files = {}
    for fmt, blob in (
        ("diffusers", diffusers_file(family, result.lora, meta)),
        ("kohya", kohya_file(family, result.lora, result.alpha, meta)),
    ):
        key = f"{prefix}lora{'' if fmt == 'diffusers' else '_kohya'}.safetensors"
        storage.put(key, blob, content_type="application/octet-stream")
        files[fmt] = {"key": key, "size_bytes": len(blob)}

    model = LoraModel(
        id=model_id,
        user_id=job.user_id,
        training_id=job.id,
        subject_id=job.subject_id,
        name=name,
        base_model=base_model,
        family=family,
        tiny=tiny,
        trigger_word=trigger_word,
        rank=result.rank,
        files=files,
        quality=None,
        samples=[],
    )
    final = _progress_dict(config.steps, config.steps, result.final_loss, 0.0)
    if not _succeed(sessions, job, model, final):
        storage.delete_prefix(prefix)
        raise Canceled(config.steps)
    _cleanup(storage, job)
    log.info("training %s succeeded: model %s (%s)", job.id, model_id, result.timings)
    return "succeeded"


@retried
def _succeed(sessions: sessionmaker[Session], job: _Job, model: LoraModel, progress: dict[str, Any]) -> bool:
    """Record the model and `succeeded` in one transaction; False if the job was canceled or taken over."""
    with session_scope(sessions) as session:
        done = session.execute(
            update(Training)
            .where(Training.id == job.id, Training.worker_token == job.token)
            .where(Training.status == TrainingStatus.assessing)
            .values(status=TrainingStatus.succeeded, finished_at=utcnow(), model_id=model.id, progress=progress)
        ).rowcount
        if not done:
            # A first try whose commit went through but whose answer was lost looks like this too.
            row = session.get(Training, job.id)
            return row is not None and row.status == TrainingStatus.succeeded and row.model_id == model.id
        session.add(model)
    return True


def _items(
    session: Session, storage: Storage, subject: Subject, trigger_word: str, settings: Settings
) -> list[TrainItem]:
    """The subject's selected photos: framed crop (or the original), caption with the trigger word, face box."""
    photos = list(
        session.scalars(
            select(Photo)
            .where(Photo.subject_id == subject.id, Photo.status == PhotoStatus.analyzed, Photo.selected.is_(True))
            .where(Photo.excluded.is_(False), Photo.verdict != REJECTED)
            .order_by(Photo.id)
        )
    )
    if len(photos) < settings.min_training_photos:
        raise TrainingError(
            "not_enough_photos",
            f"Only {len(photos)} usable photo(s) are selected; training needs at least {settings.min_training_photos}.",
            "Upload more clear photos of the same person, check GET /v1/subjects/{id}/report, then start again.",
        )
    items = []
    for photo in photos:
        image, box = _framed(storage, photo)
        caption = training_caption(
            caption=photo.caption, auto_caption=photo.auto_caption, trigger=trigger_word, class_word=subject.class_word
        )
        items.append(TrainItem(key=f"{photo.id}:{photo.sha256[:12]}", image=image, caption=caption, face_box=box))
    return items


def _framed(storage: Storage, photo: Photo) -> tuple[Image.Image, tuple[float, float, float, float] | None]:
    """The analysis crop with the face box moved into it; the original when there is no crop."""
    face = photo.face_box
    if photo.has_crop and photo.crop_box:
        try:
            data = storage.get(photo_key(photo.user_id, photo.subject_id, photo.id, "crop", "jpg"))
        except ObjectNotFound:
            data = None
        if data is not None:
            image = Image.open(io.BytesIO(data)).convert("RGB")
            return image, face_in_crop(face, photo.crop_box, image.width)
    data = storage.get(photo_key(photo.user_id, photo.subject_id, photo.id, "original", photo.stored_ext))
    image = Image.open(io.BytesIO(data)).convert("RGB")  # centre-cropped into its bucket by the trainer
    return image, tuple(face) if face else None  # type: ignore[return-value]


def _check_trigger(job: _Job, sessions: sessionmaker[Session], config: TrainConfig, word: str) -> str:
    """Swap a generated trigger word for one that fits the real tokenizer's budget, before training starts."""
    from transformers import AutoTokenizer

    from app.trainings.catalog import FLUX

    try:
        tokenizers = [AutoTokenizer.from_pretrained(config.source, subfolder="tokenizer")]
        if config.family == FLUX:
            tokenizers.append(AutoTokenizer.from_pretrained(config.source, subfolder="tokenizer_2"))
    except (OSError, ValueError):
        return word  # the model load will report what is wrong

    def count(text: str) -> int:
        return max(len(t(text, add_special_tokens=False).input_ids) for t in tokenizers)

    if count(word) <= trigger.MAX_TOKENS:
        return word
    with session_scope(sessions) as session:
        taken = set(
            session.scalars(select(Training.trigger_word).where(Training.user_id == job.user_id, Training.id != job.id))
        )
        better = trigger.generate(seed=zlib.crc32(job.subject_id.bytes), taken=taken, count_tokens=count)
        if count(better) < count(word):
            session.execute(update(Training).where(Training.id == job.id).values(trigger_word=better))
            log.info("training %s: trigger word %s -> %s (%d tokens)", job.id, word, better, count(better))
            return better
    return word


def _progress_dict(step: int, total: int, loss: float | None, eta: float | None) -> dict[str, Any]:
    return {
        "step": step,
        "total_steps": total,
        "loss": round(loss, 6) if loss is not None else None,
        "eta_seconds": round(eta, 1) if eta is not None else None,
        "percent": round(100.0 * step / total, 1) if total else 0.0,
    }


@retried
def _write_progress(sessions: sessionmaker[Session], job: _Job, p: Progress) -> bool:
    with session_scope(sessions) as session:
        return bool(
            session.execute(
                update(Training)
                .where(Training.id == job.id, Training.worker_token == job.token)
                .where(Training.status == TrainingStatus.training)
                .values(progress=_progress_dict(p.step, p.total_steps, p.loss, p.eta_seconds), heartbeat_at=utcnow())
            ).rowcount
        )


@retried
def _advance(sessions: sessionmaker[Session], job: _Job, current: str, new: str) -> None:
    """Move to the next phase, or stop if the job was canceled or taken over meanwhile.

    One conditional UPDATE: a cancel committed at any moment before it is never overwritten.
    """
    now = utcnow()
    with session_scope(sessions) as session:
        moved = session.execute(
            update(Training)
            .where(Training.id == job.id, Training.worker_token == job.token)
            .where(Training.status.in_((current, new)))
            .values(status=new, heartbeat_at=now)
        ).rowcount
        if not moved:
            raise Canceled(0)
        row = session.get(Training, job.id)  # ours now: the phases are written under the same lease
        phases = dict(row.phases or {})
        phases.setdefault(new, now.isoformat())
        row.phases = phases


@retried
def _hand_back(sessions: sessionmaker[Session], job: _Job) -> None:
    """Give the lease back, marked as having no message: the next sweep (the next worker's first) sends it."""
    # Not sent from here: this worker, shutting down, could still take the message and drop it.
    with session_scope(sessions) as session:
        session.execute(
            update(Training)
            .where(Training.id == job.id, Training.worker_token == job.token)
            .where(Training.status.in_(RUNNING_TRAINING))
            .values(worker_token=None, heartbeat_at=None, dispatched_at=NO_MESSAGE, resends=0)
        )


@retried
def _fail(sessions: sessionmaker[Session], job: _Job, error: dict[str, str]) -> None:
    with session_scope(sessions) as session:
        session.execute(
            update(Training)
            .where(Training.id == job.id, Training.worker_token == job.token)
            .where(Training.status.in_(RUNNING_TRAINING))
            .values(status=TrainingStatus.failed, error=error, finished_at=utcnow())
        )
    log.warning("training %s failed: %s", job.id, error["code"])


TIME_LIMIT_ERROR = {
    "code": "time_limit_exceeded",
    "message": "The training ran longer than the worker's time limit.",
    "hint": "Start again with fewer steps or a lower resolution.",
}


def _unexpected(exc: Exception) -> dict[str, str]:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return {
            "code": "out_of_gpu_memory",
            "message": "The GPU ran out of memory.",
            "hint": "Start again with a lower resolution (e.g. 768 instead of 1024), batch_size 1, or a lower rank; "
            "or set gradient_checkpointing to true.",
        }
    return {
        "code": "internal_error",
        "message": "The training failed unexpectedly.",
        "hint": "Start it again; if it fails again, report this training's id to the operator.",
    }


def _cleanup(storage: Storage, job: _Job) -> None:
    """The cache and checkpoints are only for resuming this run."""
    prefix = training_prefix(job.user_id, job.id)
    for part in ("cache/", "checkpoints/"):
        storage.delete_prefix(prefix + part)


def _free_gpu() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@shared_task(name=TRAIN_MODEL, acks_late=True, soft_time_limit=TIME_LIMIT_S, time_limit=TIME_LIMIT_S + 300)
def run_training_task(training_id: str) -> str:
    """Celery entry point: ids in, never objects."""
    outcome = run_training(
        uuid.UUID(training_id), sessions=session_factory(), storage=get_storage(), settings=get_settings()
    )
    log.info("training.run %s: %s", training_id, outcome)
    return outcome
