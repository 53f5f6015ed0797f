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

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import numpy as np
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import retried, session_factory, session_scope
from app.core.keys import model_prefix, photo_key, training_prefix
from app.core.queue import TRAIN_MODEL
from app.core.settings import Settings, get_settings
from app.core.storage import Storage, get_storage
from app.db import RUNNING_TRAINING, Model, Photo, PhotoStatus, Subject, Training, TrainingStatus
from app.db.base import utcnow
from app.notify import outbox
from app.photos.reasons import REJECTED
from app.photos.review import encodings_from_bytes
from worker.housekeeping.registry import NO_MESSAGE
from worker.jobs import Heartbeat
from worker.lifecycle import stopping
from worker.training.errors import Canceled, Interrupted, TrainingError
from worker.training.pipeline import Reporter, RunSpec, TrainPhoto, clear_work, free_memory, run_pipeline
from worker.training.trainer import Progress

log = logging.getLogger(__name__)


# A FLUX.1-dev run of 4,000 steps at 1024 px takes about an hour on an H100; six allows slow GPUs.
TIME_LIMIT_S = 6 * 3600


@dataclass
class _Job:
    id: uuid.UUID
    user_id: uuid.UUID
    subject_id: uuid.UUID
    token: str
    wants_progress: bool = False  # its webhook takes training.progress events


def _renew(sessions: sessionmaker[Session], job: _Job) -> bool:
    """Renew the lease; False once the job is canceled, deleted or taken over."""
    with session_scope(sessions) as session:
        return bool(
            session.execute(
                update(Training)
                .where(Training.id == job.id, Training.worker_token == job.token)
                .where(Training.status.in_(RUNNING_TRAINING))
                .values(heartbeat_at=utcnow())
            ).rowcount
        )


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
    with Heartbeat(
        partial(_renew, sessions, job), every=settings.training_heartbeat_s, name=f"lease-{job.id}"
    ) as lease:
        try:
            return _run(job, lease, sessions=sessions, storage=storage, settings=settings, on_step=on_step)
        except Canceled as exc:
            log.info("training %s stopped at step %d: canceled", job.id, exc.step)
            clear_work(_work(storage, job))
            return "canceled"
        except Interrupted as exc:
            _hand_back(sessions, job)
            log.info("training %s handed back at step %d: the worker is shutting down", job.id, exc.step)
            return "handed back"
        except SoftTimeLimitExceeded:
            _fail(sessions, job, TIME_LIMIT_ERROR, settings)
            return "failed"
        except TrainingError as exc:
            _fail(sessions, job, exc.as_dict(), settings)
            return "failed"
        except Exception as exc:  # noqa: BLE001 - every failure ends in `failed`, never a traceback to the user
            error = _unexpected(exc)
            if error["code"] == "internal_error":
                log.exception("training %s failed", job.id)
            _fail(sessions, job, error, settings)
            return "failed"
        finally:
            free_memory()
            _erase_if_deleted(sessions, storage, job)


def _erase_if_deleted(sessions: sessionmaker[Session], storage: Storage, job: _Job) -> None:
    """A training deleted while it ran (with its subject or user): remove whatever it wrote after the deletion."""
    try:
        with session_scope(sessions) as session:
            gone = session.get(Training, job.id) is None
        if gone:
            storage.delete_prefix(training_prefix(job.user_id, job.id))
    except Exception:  # noqa: BLE001 - the job has ended either way
        log.warning("could not check whether training %s was deleted", job.id, exc_info=True)


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
        _mark_phase(row, TrainingStatus.preparing, now)
        if row.started_at is None:
            row.started_at = now
            outbox.training_webhook(session, row, outbox.STARTED)
        wants = bool(row.webhook_url) and outbox.PROGRESS in (row.webhook_events or ())
        return _Job(row.id, row.user_id, row.subject_id, token, wants)


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
    job: _Job, lease: Heartbeat, *, sessions: sessionmaker[Session], storage: Storage, settings: Settings, on_step: Any
) -> str:
    with session_scope(sessions) as session:
        row = session.get(Training, job.id)
        subject = session.get(Subject, job.subject_id)
        if row is None or subject is None:
            raise Canceled(0)
        spec = RunSpec(
            name=row.name,
            base_model=row.base_model,
            family=row.family,
            tiny=row.tiny,
            trigger_word=row.trigger_word,
            class_word=subject.class_word,
            params=dict(row.params),
            validation_prompts=tuple(row.validation_prompts or ()),
        )
        photos = _photos(session, storage, subject, autocaption=spec.params.get("autocaption", True))
        replicate_model_id = row.replicate_model_id
        identity = np.frombuffer(subject.identity, dtype=np.float32) if subject.identity else None

    def alive() -> bool:
        return not lease.lost.is_set()

    def phase(name_: str) -> None:
        if name_ == "assessing":
            _advance(sessions, job, TrainingStatus.training, TrainingStatus.assessing)
            return
        if stopping():
            raise Interrupted(0)
        if name_ == "training":
            _advance(sessions, job, TrainingStatus.preparing, TrainingStatus.training)
        elif not alive():
            raise Canceled(0)

    def tick() -> None:
        if stopping():
            raise Interrupted(int(spec.params["steps"]))
        if not alive():
            raise Canceled(int(spec.params["steps"]))

    def progress(p: Progress) -> bool:
        ok = _write_progress(sessions, job, p, settings)
        if on_step is not None:
            on_step(p)
        return ok and alive()

    model_id = uuid.uuid4()
    out = model_prefix(job.user_id, model_id)
    try:
        exported = run_pipeline(
            spec,
            photos,
            identity=identity,
            storage=storage,
            work=_work(storage, job),
            out=out,
            settings=settings,
            reporter=Reporter(phase=phase, progress=progress, should_stop=stopping, tick=tick),
            fix_hint="Upload more clear photos of the same person, check GET /v1/subjects/{id}/report, "
            "then start again.",
        )
    except BaseException:
        storage.delete_prefix(out)  # files of an export cut short
        raise
    result = exported.result
    model = Model(
        id=model_id,
        user_id=job.user_id,
        training_id=job.id,
        subject_id=job.subject_id,
        name=spec.name,
        base_model=spec.base_model,
        family=spec.family,
        tiny=spec.tiny,
        trigger_word=spec.trigger_word,
        rank=result.rank,
        files=exported.files | ({"contact_sheet": {"key": exported.sheet_key}} if exported.sheet_key else {}),
        quality=exported.quality,
        samples=exported.samples,
        replicate_model_id=replicate_model_id,  # a version of the Replicate-style model the training named
    )
    total = int(spec.params["steps"])
    final = _progress_dict(total, total, result.final_loss, 0.0)
    if not _succeed(sessions, job, model, final, settings):
        storage.delete_prefix(out)
        raise Canceled(total)
    clear_work(_work(storage, job))
    log.info("training %s succeeded: model %s (%s)", job.id, model_id, result.timings)
    return "succeeded"


def _work(storage: Storage, job: _Job) -> Storage:
    """The run's cache and checkpoints: its folder in the store."""
    return storage.under(training_prefix(job.user_id, job.id))


@retried
def _succeed(
    sessions: sessionmaker[Session], job: _Job, model: Model, progress: dict[str, Any], settings: Settings
) -> bool:
    """Record the model, `succeeded` and its notifications in one transaction; False if the job was
    canceled or taken over."""
    with session_scope(sessions) as session:
        done = session.execute(
            update(Training)
            .where(Training.id == job.id, Training.worker_token == job.token)
            .where(Training.status == TrainingStatus.assessing)
            .values(status=TrainingStatus.succeeded, finished_at=utcnow(), model_id=model.id, progress=progress)
        ).rowcount
        row = session.get(Training, job.id)
        if not done:
            # A first try whose commit went through but whose answer was lost looks like this too.
            return row is not None and row.status == TrainingStatus.succeeded and row.model_id == model.id
        _mark_phase(row, TrainingStatus.succeeded, row.finished_at)
        session.add(model)
        session.flush()
        outbox.training_ended(session, row, settings, model=model)
    return True


def _mark_phase(row: Training, name: str, at: datetime) -> None:
    """When the run entered `name` (the row must be this worker's: written under its lease or just ended)."""
    phases = dict(row.phases or {})
    phases.setdefault(name, at.isoformat())
    row.phases = phases


def _photos(session: Session, storage: Storage, subject: Subject, *, autocaption: bool = True) -> list[TrainPhoto]:
    """The subject's selected photos, in upload order; their images are read when the pipeline frames them.

    Without `autocaption` a photo trains with its own caption (a .txt beside it) or the plain template.
    """
    rows = session.scalars(
        select(Photo)
        .where(Photo.subject_id == subject.id, Photo.status == PhotoStatus.analyzed, Photo.selected.is_(True))
        .where(Photo.excluded.is_(False), Photo.verdict != REJECTED)
        .order_by(Photo.id)
    )
    photos = []
    for row in rows:
        encodings = encodings_from_bytes(row.encodings)
        face = row.faces[row.face_index] if row.face_index is not None and row.face_index < len(row.faces) else {}
        which = face.get("encoding")
        encoding = encodings[which] if encodings is not None and which is not None and which < len(encodings) else None
        crop = photo_key(row.user_id, row.subject_id, row.id, "crop", "jpg") if row.has_crop else None
        original = photo_key(row.user_id, row.subject_id, row.id, "original", row.stored_ext)
        photos.append(
            TrainPhoto(
                key=f"{row.id}:{row.sha256[:12]}",
                caption=row.caption,
                auto_caption=row.auto_caption if autocaption else None,
                face_box=row.face_box,
                crop_box=row.crop_box,
                crop=(lambda k=crop: storage.get_or_none(k) if k else None),
                original=(lambda k=original: storage.get(k)),
                encoding=encoding,
            )
        )
    return photos


def _progress_dict(step: int, total: int, loss: float | None, eta: float | None) -> dict[str, Any]:
    return {
        "step": step,
        "total_steps": total,
        "loss": round(loss, 6) if loss is not None else None,
        "eta_seconds": round(eta, 1) if eta is not None else None,
        "percent": round(100.0 * step / total, 1) if total else 0.0,
    }


@retried
def _write_progress(sessions: sessionmaker[Session], job: _Job, p: Progress, settings: Settings) -> bool:
    with session_scope(sessions) as session:
        written = session.execute(
            update(Training)
            .where(Training.id == job.id, Training.worker_token == job.token)
            .where(Training.status == TrainingStatus.training)
            .values(progress=_progress_dict(p.step, p.total_steps, p.loss, p.eta_seconds), heartbeat_at=utcnow())
        ).rowcount
        if written and job.wants_progress:
            outbox.training_progress(session, session.get(Training, job.id), settings)
        return bool(written)


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
        _mark_phase(session.get(Training, job.id), new, now)  # ours now: written under the same lease


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
def _fail(sessions: sessionmaker[Session], job: _Job, error: dict[str, str], settings: Settings) -> None:
    now = utcnow()
    with session_scope(sessions) as session:
        failed = session.execute(
            update(Training)
            .where(Training.id == job.id, Training.worker_token == job.token)
            .where(Training.status.in_(RUNNING_TRAINING))
            .values(status=TrainingStatus.failed, error=error, finished_at=now)
        ).rowcount
        if failed:
            row = session.get(Training, job.id)
            _mark_phase(row, TrainingStatus.failed, now)
            outbox.training_ended(session, row, settings)
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


@shared_task(name=TRAIN_MODEL, acks_late=True, soft_time_limit=TIME_LIMIT_S, time_limit=TIME_LIMIT_S + 300)
def run_training_task(training_id: str) -> str:
    """Celery entry point: ids in, never objects."""
    outcome = run_training(
        uuid.UUID(training_id), sessions=session_factory(), storage=get_storage(), settings=get_settings()
    )
    log.info("training.run %s: %s", training_id, outcome)
    return outcome
