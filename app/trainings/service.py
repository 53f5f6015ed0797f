"""Creating, reading and canceling trainings. Services flush; the request commits."""

from __future__ import annotations

import uuid
import zlib

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from app.audit.service import record
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.queue import TRAIN_MODEL, enqueue
from app.core.reads import OwnedRow
from app.core.settings import Settings
from app.db import ACTIVE_TRAINING, Notification, Subject, Training, TrainingStatus, User
from app.db.base import utcnow
from app.notify import outbox
from app.notify.webhooks import TargetRefused, check_target
from app.subjects.report import build_report
from app.subjects.service import get_subject
from app.trainings import catalog, trigger
from app.trainings.params import public_params, resolve_params
from app.trainings.schemas import AttemptRead, DeliveryRead, ProgressRead, TrainingCreate, TrainingRead
from app.trainings.tokens import token_counter

TERMINAL = (TrainingStatus.succeeded, TrainingStatus.failed, TrainingStatus.canceled)


def lock_user(session: Session, user_id: uuid.UUID) -> None:
    """Serialise this user's training requests (a row lock on Postgres, the write lock on SQLite)."""
    session.execute(update(User).where(User.id == user_id).values(id=User.id))


def create_training(session: Session, *, user: User, data: TrainingCreate, settings: Settings) -> Training:
    """Validate the request against the subject and base model, then queue the job."""
    subject = get_subject(session, user=user, subject_id=data.subject_id)
    training = build_training(session, user=user, subject=subject, data=data, settings=settings)
    enqueue(session, TRAIN_MODEL, str(training.id))
    return training


def build_training(
    session: Session,
    *,
    user: User,
    subject: Subject,
    data: TrainingCreate,
    settings: Settings,
    awaiting_photos: bool = False,
) -> Training:
    """Check the request and add the queued Training row, without sending it to a worker.

    With `awaiting_photos` the subject's photos are still being analysed: their readiness is
    checked when the analysis ends (`app.trainings.start`), which sends the job or fails it.
    """
    base = base_model_named(data.base_model or catalog.default_base_model(settings.default_base_model))
    check_runnable(base, settings)
    if data.webhook_url is not None:
        _check_webhook(str(data.webhook_url), user, settings)
    lock_user(session, user.id)
    active = session.scalar(
        select(Training).where(Training.user_id == user.id, Training.status.in_(ACTIVE_TRAINING)).limit(1)
    )
    if active is not None:
        raise Conflict(
            f"Training {active.id} is still {active.status}.",
            code="training_in_progress",
            hint="Wait for it to finish, or cancel it with POST /v1/trainings/{id}/cancel.",
            details={"training_id": str(active.id)},
        )
    if not awaiting_photos:
        report = build_report(session, subject=subject, settings=settings)
        if not report.ready_to_train:
            raise Unprocessable(
                "The subject's photos are not ready to train: " + "; ".join(p.message for p in report.problems),
                code="subject_not_ready",
                hint="Fix what GET /v1/subjects/{id}/report lists under problems, then try again.",
                details={"problems": [p.model_dump() for p in report.problems]},
            )
    taken = set(session.scalars(select(Training.trigger_word).where(Training.user_id == user.id)))
    if data.trigger_word is not None:
        word, generated = data.trigger_word, False
        if trigger.is_common(word):
            raise Unprocessable(
                f"{word!r} is a common word or an overused trigger; the model already has a meaning for it.",
                code="trigger_word_common",
                hint="Pick a made-up word, or leave trigger_word out to get one generated.",
            )
    else:
        # Decided here, once: the answer, the events and the model all carry this word.
        word = trigger.generate(seed=zlib.crc32(subject.id.bytes), taken=taken, count_tokens=token_counter(base))
        generated = True

    params = resolve_params(
        base,
        steps=data.steps,
        learning_rate=data.learning_rate,
        rank=data.rank,
        resolution=data.resolution,
        seed=data.seed,
        batch_size=data.batch_size,
        face_weight=data.face_weight,
        gradient_checkpointing=data.gradient_checkpointing,
        autocaption=data.autocaption,
    )
    training = Training(
        user_id=user.id,
        subject_id=subject.id,
        name=data.name,
        base_model=base.name,
        family=base.family,
        tiny=base.tiny,
        trigger_word=word,
        trigger_generated=generated,
        params=params,
        validation_prompts=data.validation_prompts,
        webhook_url=str(data.webhook_url) if data.webhook_url else None,
        webhook_events=data.webhook_events,
        status=TrainingStatus.queued,
        progress={"step": 0, "total_steps": params["steps"], "percent": 0.0},
        phases={},
        awaiting_photos=awaiting_photos,
    )
    session.add(training)
    session.flush()
    details = {"subject_id": subject.id, "base_model": base.name, "steps": params["steps"]}
    record(
        session,
        action="training_started",
        user_id=user.id,
        target_type="training",
        target_id=training.id,
        details=details,
    )
    return training


def check_runnable(base: catalog.BaseModel, settings: Settings) -> None:
    """Refuse up front what cannot run: a full-size model with no GPU where the embedded worker runs."""
    # In embedded mode the worker is this machine; in production it is elsewhere and may have one.
    if base.tiny or not settings.is_embedded_broker or catalog.gpu_present():
        return
    raise Unprocessable(
        f"{base.name} is a full-size model and this machine has no NVIDIA GPU: "
        "its training would take days on the CPU, if it fit in memory at all.",
        code="gpu_required",
        hint="Try the whole pipeline with base_model tiny-sd15 (a test model: its images are noise), "
        "or run the service with a GPU worker (see the README's production setup).",
    )


def _check_webhook(url: str, user: User, settings: Settings) -> None:
    """A webhook needs the user's signing secret, and a target that is not on this service's network."""
    if not user.webhook_secret:
        raise Unprocessable(
            "Webhooks are signed with your webhook secret, and you have none yet.",
            code="webhook_secret_missing",
            hint="Create it once with POST /v1/me/webhook-secret (keep the answer: it is shown once), then try again.",
        )
    try:
        check_target(url, allow_private=settings.webhook_allow_private_targets)
    except TargetRefused as exc:
        raise Unprocessable(exc.reason, code="webhook_url_refused", hint="Use a public http(s) URL.") from None


def base_model_named(name: str) -> catalog.BaseModel:
    try:
        return catalog.resolve(name)
    except catalog.UnknownBaseModel as exc:
        raise Unprocessable(
            str(exc),
            code="unknown_base_model",
            hint=f"Use a preset ({', '.join(catalog.PRESETS)}), a diffusers Hub id or a local diffusers folder.",
        ) from None


def get_training(session: Session, *, user: User, training_id: uuid.UUID) -> Training:
    training = session.scalar(select(Training).where(Training.id == training_id, Training.user_id == user.id))
    if training is None:
        raise training_not_found()
    return training


def training_not_found() -> NotFound:
    return NotFound("No such training.", code="training_not_found", hint="List yours with GET /v1/trainings.")


def list_trainings(session: Session, *, user: User, after: uuid.UUID | None, limit: int) -> list[Training]:
    from app.core.pagination import keyset

    query = select(Training).where(Training.user_id == user.id)
    return list(session.scalars(keyset(query, Training.id, after=after, limit=limit)))


def cancel_training(session: Session, *, training: Training, settings: Settings) -> Training:
    """Mark it canceled; a running worker notices at its next progress write (every ~2 s) and stops."""
    if training.status in TERMINAL:
        raise Conflict(
            f"The training has already {training.status}.",
            code="training_finished",
            hint="Only queued or running trainings can be canceled.",
        )
    now = utcnow()
    canceled = session.execute(
        update(Training)
        .where(Training.id == training.id, Training.status.in_(ACTIVE_TRAINING))
        .values(status=TrainingStatus.canceled, finished_at=now)
    ).rowcount
    session.flush()
    session.refresh(training)
    if canceled:
        record(
            session, action="training_canceled", user_id=training.user_id, target_type="training", target_id=training.id
        )
        training.phases = {**(training.phases or {}), TrainingStatus.canceled: now.isoformat()}
        outbox.training_ended(session, training, settings)  # in the cancel's own transaction
        session.flush()
    return training


def to_read(training: Training | OwnedRow) -> TrainingRead:
    """The API's view of a training, from its ORM object or a row of the trainings table (app.core.reads)."""
    progress = dict(training.progress or {})
    total = progress.get("total_steps") or training.params.get("steps") or 0
    step = progress.get("step", 0)
    settings = public_params(training.params)
    return TrainingRead(
        id=training.id,
        subject_id=training.subject_id,
        name=training.name,
        base_model=training.base_model,
        family=training.family,
        trigger_word=training.trigger_word,
        status=training.status,
        progress=ProgressRead(
            step=step,
            total_steps=total,
            loss=progress.get("loss"),
            eta_seconds=progress.get("eta_seconds"),
            percent=round(100.0 * step / total, 1) if total else 0.0,
        ),
        error=training.error,
        settings=settings,
        validation_prompts=training.validation_prompts,
        webhook_url=training.webhook_url,
        webhook_events=training.webhook_events,
        phases=training.phases or {},
        created_at=training.created_at,
        started_at=training.started_at,
        finished_at=training.finished_at,
        model_id=training.model_id,
        notice=catalog.TINY_NOTE if training.tiny else None,
    )


def deliveries(session: Session, *, training: Training) -> list[DeliveryRead]:
    rows = session.scalars(
        select(Notification)
        .where(Notification.training_id == training.id, Notification.channel == outbox.WEBHOOK)
        .options(selectinload(Notification.delivery_attempts))  # one query for every row's attempts
        .order_by(Notification.id)
    )
    return [
        DeliveryRead(
            id=row.id,
            event=row.event,
            url=row.target,
            status=row.status,
            created_at=row.created_at,
            next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
            sent_at=row.sent_at,
            last_error=row.last_error,
            attempts=[
                AttemptRead(
                    at=a.at, outcome=a.outcome, status_code=a.status_code, error=a.error, duration_ms=a.duration_ms
                )
                for a in row.delivery_attempts
            ],
        )
        for row in rows
    ]
