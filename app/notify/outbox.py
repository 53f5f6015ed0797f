"""The outbox: notifications are rows written in the transaction of the event they announce.

A training that ends writes its final status and its email and webhook rows in one commit, so
a crash can lose neither one without the other. `notify.deliver` (worker.notify.tasks) is sent
after that commit; if the message is lost, the housekeeping sweep sends it again.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app.core.queue import enqueue
from app.core.settings import Settings
from app.db import Model, Notification, Subject, Training, TrainingStatus, User
from app.db.base import utcnow

DELIVER = "notify.deliver"
EMAIL, WEBHOOK = "email", "webhook"
STARTED, PROGRESS = "training.started", "training.progress"
ENDED = {
    TrainingStatus.succeeded: "training.succeeded",
    TrainingStatus.failed: "training.failed",
    TrainingStatus.canceled: "training.canceled",
}
WEBHOOK_EVENTS = (STARTED, PROGRESS, *ENDED.values())
# With no `webhook_events`, every event but the frequent progress one is sent.
DEFAULT_EVENTS = (STARTED, *ENDED.values())


def retry_delay(attempts: int, settings: Settings) -> timedelta:
    """After the n-th failed try: notify_retry_s, then three times as long each time, at most 6 hours."""
    return timedelta(seconds=min(settings.notify_retry_s * 3 ** max(attempts - 1, 0), 6 * 3600))


def training_body(training: Training, event: str, at: datetime, model: Model | None = None) -> dict[str, Any]:
    """The webhook's JSON body (Standard Webhooks' `type`, `timestamp`, `data`)."""
    data: dict[str, Any] = {
        "id": str(training.id),
        "subject_id": str(training.subject_id),
        "name": training.name,
        "base_model": training.base_model,
        "trigger_word": training.trigger_word,
        "status": training.status,
        "progress": training.progress or {},
        "error": training.error,
        "model_id": str(model.id if model else training.model_id) if (model or training.model_id) else None,
    }
    if model is not None:
        data["quality"] = model.quality
    return {"type": event, "timestamp": at.isoformat().replace("+00:00", "Z"), "data": data}


def _wants(training: Training, event: str) -> bool:
    if not training.webhook_url or training.webhook_disabled_at is not None:
        return False
    return event in (training.webhook_events or DEFAULT_EVENTS)


def _add(session: Session, training: Training, channel: str, event: str, target: str, payload: dict[str, Any]) -> None:
    """Write the row (in the caller's transaction) and send `notify.deliver` once it commits."""
    row = Notification(
        user_id=training.user_id,
        training_id=training.id,
        channel=channel,
        event=event,
        target=target,
        payload=payload,
        next_attempt_at=utcnow(),
    )
    session.add(row)
    session.flush()
    enqueue(session, DELIVER, str(row.id))


def training_webhook(session: Session, training: Training, event: str, *, model: Model | None = None) -> None:
    """Queue `event` for the training's webhook, if it has one that wants it."""
    if not _wants(training, event):
        return
    _add(session, training, WEBHOOK, event, training.webhook_url, training_body(training, event, utcnow(), model))


def training_progress(session: Session, training: Training, settings: Settings) -> None:
    """`training.progress`, at most once every `webhook_progress_every_s` per training."""
    if not _wants(training, PROGRESS):
        return
    now = utcnow()
    last = training.progress_notified_at
    if last is not None and (now - last).total_seconds() < settings.webhook_progress_every_s:
        return
    training.progress_notified_at = now
    training_webhook(session, training, PROGRESS)


def training_ended(session: Session, training: Training, settings: Settings, *, model: Model | None = None) -> None:
    """The notifications of a training's end, in the transaction that ends it: the owner's email
    (success or failure; a cancel was the owner's own doing) and the webhook."""
    event = ENDED[TrainingStatus(training.status)]
    training_webhook(session, training, event, model=model)
    if training.status == TrainingStatus.canceled:
        return
    user = session.get(User, training.user_id)
    if user is None:
        return
    subject = session.get(Subject, training.subject_id)
    base = settings.public_url.rstrip("/")
    payload: dict[str, Any] = {"training_id": str(training.id), "name": training.name}
    if model is not None:
        payload |= {
            "model_id": str(model.id),
            "model_name": model.name,
            "trigger_word": model.trigger_word,
            "quality": model.quality,
            "link": f"{base}/v1/models/{model.id}",
            "tiny": model.tiny,
            "class_word": subject.class_word if subject else "person",
        }
    else:
        payload |= {"error": training.error or {}, "link": f"{base}/v1/trainings/{training.id}"}
    _add(session, training, EMAIL, event, user.email, payload)


def body_bytes(payload: dict[str, Any]) -> bytes:
    """The exact bytes a webhook sends and signs (the same on every attempt)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
