"""`notify.deliver`: send one outbox row (an email or a webhook), record the attempt, retry or give up.

A worker claims the row with a conditional update (pending and due -> sending, with a token), so
a duplicate message or a second worker finds nothing to do: a notification is never sent twice
by two workers. A worker killed between the send and the record leaves the row `sending`; the
sweep (`worker.notify.recovery`) sends it again once the claim is stale, so such a crash can
repeat a delivery (at least once, never lost). Emails keep one Message-ID and webhooks one
`webhook-id` across attempts, so receivers can drop a repeat.
"""

from __future__ import annotations

import logging
import smtplib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import shared_task
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import retried, session_factory, session_scope
from app.core.mail import send_email
from app.core.queue import get_client
from app.core.settings import Settings, get_settings
from app.core.storage import Storage, get_storage
from app.db import DeliveryAttempt, DeliveryStatus, Model, Notification, Training, User
from app.db.base import utcnow
from app.notify import emails
from app.notify.outbox import DELIVER, EMAIL, body_bytes, retry_delay
from app.notify.webhooks import TargetRefused, check_target, signed_headers
from app.trainings.catalog import TINY_NOTE
from worker.notify.http import HttpFailure, post

log = logging.getLogger(__name__)

SENT, RETRY, FAILED = "sent", "retry", "failed"


@dataclass
class _Claim:
    id: uuid.UUID
    token: str
    channel: str
    event: str
    target: str
    payload: dict[str, Any]
    attempts: int
    user_id: uuid.UUID
    training_id: uuid.UUID | None


@dataclass
class _Outcome:
    result: str  # sent | retry | failed
    status_code: int | None = None
    error: str | None = None
    gone: bool = False  # the webhook endpoint answered 410 Gone
    written: Path | None = None  # the `.eml` file written to the outbox folder (no SMTP server configured)


def deliver(
    notification_id: uuid.UUID, *, sessions: sessionmaker[Session], storage: Storage, settings: Settings
) -> str:
    """Try once; returns what happened (sent, retry, failed, or why nothing was done)."""
    claim = _claim(notification_id, sessions)
    if isinstance(claim, str):
        return claim
    return _attempt(claim, sessions=sessions, storage=storage, settings=settings)


def _attempt(claim: _Claim, *, sessions: sessionmaker[Session], storage: Storage, settings: Settings) -> str:
    """Send a claimed row once and record what happened."""
    started = time.perf_counter()
    try:
        if claim.channel == EMAIL:
            outcome = _send_email(claim, sessions=sessions, storage=storage, settings=settings)
        else:
            outcome = _send_webhook(claim, sessions=sessions, settings=settings)
    except Exception as exc:  # noqa: BLE001 - an unexpected error is one failed attempt, not a lost row
        log.exception("notification %s: unexpected error", claim.id)
        outcome = _Outcome(RETRY, error=f"unexpected error: {type(exc).__name__}")
    if outcome.result == RETRY and claim.attempts >= settings.notify_max_attempts:
        outcome.result = FAILED
        outcome.error = f"{outcome.error} (gave up after {claim.attempts} attempts)"
    kept = _record(claim, outcome, int((time.perf_counter() - started) * 1000), sessions=sessions, settings=settings)
    if not kept and outcome.written is not None:
        # The row was deleted while this email was being written (its user or subject was erased):
        # the erasure purged the outbox folder after its commit, maybe before this file existed.
        outcome.written.unlink(missing_ok=True)
        log.info("notification %s: deleted while sending; its outbox copy is removed", claim.id)
    return outcome.result


@retried
def _claim(notification_id: uuid.UUID, sessions: sessionmaker[Session]) -> _Claim | str:
    token = uuid.uuid4().hex
    now = utcnow()
    with session_scope(sessions) as session:
        claimed = session.execute(
            update(Notification)
            .where(Notification.id == notification_id, Notification.status == DeliveryStatus.pending)
            .where(Notification.next_attempt_at <= now)
            .values(
                status=DeliveryStatus.sending, claimed_at=now, claim_token=token, attempts=Notification.attempts + 1
            )
        ).rowcount
        row = session.get(Notification, notification_id)
        if row is None:
            return "gone"
        if not claimed:
            return "not due yet" if row.status == DeliveryStatus.pending else f"already {row.status}"
        return _Claim(
            row.id,
            token,
            row.channel,
            row.event,
            row.target,
            dict(row.payload),
            row.attempts,
            row.user_id,
            row.training_id,
        )


def _send_email(claim: _Claim, *, sessions: sessionmaker[Session], storage: Storage, settings: Settings) -> _Outcome:
    message = _compose(claim, sessions=sessions, storage=storage)
    try:
        where = send_email(message, settings)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _msg in exc.recipients.values()]
        temporary = all(400 <= c < 500 for c in codes)
        return _Outcome(RETRY if temporary else FAILED, codes[0] if codes else None, f"recipient refused: {codes}")
    except smtplib.SMTPResponseException as exc:
        reply = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        temporary = 400 <= exc.smtp_code < 500
        return _Outcome(RETRY if temporary else FAILED, exc.smtp_code, f"SMTP {exc.smtp_code}: {reply[:300]}")
    except (TimeoutError, smtplib.SMTPException, OSError) as exc:
        return _Outcome(RETRY, None, f"could not reach the mail server: {exc}"[:400])
    log.info("notification %s: email sent to %s", claim.id, where)
    return _Outcome(SENT, 250, written=None if settings.smtp_url else Path(where))


def _compose(claim: _Claim, *, sessions: sessionmaker[Session], storage: Storage):  # noqa: ANN202
    p = claim.payload
    message_id = f"<{claim.id}@lookalike>"
    if "model_id" not in p:
        return emails.training_failed_email(
            to=claim.target, message_id=message_id, training_name=p["name"], error=p.get("error") or {}, link=p["link"]
        )
    sample = None
    with session_scope(sessions) as session:
        model = session.get(Model, uuid.UUID(p["model_id"]))
        key = _preview_key(model) if model is not None else None
    if key:
        sample = storage.get_or_none(key)
    return emails.training_succeeded_email(
        to=claim.target,
        message_id=message_id,
        model_name=p["model_name"],
        trigger_word=p["trigger_word"],
        quality=p.get("quality"),
        example_prompt=f"a portrait photo of {p['trigger_word']} {p.get('class_word', 'person')}, natural light",
        link=p["link"],
        sample_jpeg=sample,
        notice=TINY_NOTE if p.get("tiny") else None,
    )


def _preview_key(model: Model) -> str | None:
    """The chosen checkpoint's first sample with the trigger word: the email's picture."""
    chosen = (model.quality or {}).get("chosen_step")
    for sample in model.samples or []:
        if sample.get("step") == chosen and sample.get("kind") == "subject":
            return sample.get("key")
    return None


def _send_webhook(claim: _Claim, *, sessions: sessionmaker[Session], settings: Settings) -> _Outcome:
    with session_scope(sessions) as session:
        user = session.get(User, claim.user_id)
        secret = user.webhook_secret if user else None
        training = session.get(Training, claim.training_id) if claim.training_id else None
        disabled = training is not None and training.webhook_disabled_at is not None
    if disabled:
        return _Outcome(FAILED, error="the endpoint was disabled after it answered 410 Gone")
    if not secret:
        return _Outcome(FAILED, error="no webhook secret: create one with POST /v1/me/webhook-secret")
    try:  # checked again at every attempt: the name may resolve elsewhere now
        addresses = check_target(claim.target, allow_private=settings.webhook_allow_private_targets)
    except TargetRefused as exc:
        return _Outcome(FAILED, error=exc.reason)
    body = body_bytes(claim.payload)
    headers = signed_headers(secret, str(claim.id), int(time.time()), body)
    try:
        answer = post(claim.target, body, headers, timeout=settings.webhook_timeout_s, addresses=addresses)
    except HttpFailure as exc:
        return _Outcome(RETRY, error=exc.reason)
    if 200 <= answer.status < 300:
        return _Outcome(SENT, answer.status)
    if answer.status == 410:
        return _Outcome(FAILED, 410, "the endpoint answered 410 Gone: it is disabled for this training", gone=True)
    return _Outcome(RETRY, answer.status, f"HTTP {answer.status}: {answer.excerpt[:200]}")


@retried
def _record(
    claim: _Claim, outcome: _Outcome, duration_ms: int, *, sessions: sessionmaker[Session], settings: Settings
) -> bool:
    """Record the attempt on the row; False when the row no longer exists (deleted meanwhile)."""
    now = utcnow()
    values: dict[str, Any] = {"claim_token": None, "last_error": outcome.error}
    if outcome.result == SENT:
        values |= {"status": DeliveryStatus.sent, "sent_at": now}
    elif outcome.result == FAILED:
        values |= {"status": DeliveryStatus.failed}
    else:
        delay = retry_delay(claim.attempts, settings)
        values |= {"status": DeliveryStatus.pending, "next_attempt_at": now + delay}
    with session_scope(sessions) as session:
        mine = session.execute(
            update(Notification)
            .where(Notification.id == claim.id, Notification.claim_token == claim.token)
            .values(**values)
        ).rowcount
        if not mine:  # the sweep took it back meanwhile (another attempt follows), or it was deleted
            return session.get(Notification, claim.id) is not None
        session.add(
            DeliveryAttempt(
                notification_id=claim.id,
                at=now,
                outcome=outcome.result,
                status_code=outcome.status_code,
                error=outcome.error,
                duration_ms=duration_ms,
            )
        )
        if outcome.gone and claim.training_id is not None:
            _disable(session, claim.training_id, now)
    if outcome.result == RETRY:
        get_client().send_task(DELIVER, args=[str(claim.id)], countdown=delay.total_seconds())
    return True


def _disable(session: Session, training_id: uuid.UUID, now: Any) -> None:
    """410 Gone: the training's webhook is off, and what was still waiting for it is dropped."""
    session.execute(update(Training).where(Training.id == training_id).values(webhook_disabled_at=now))
    session.execute(
        update(Notification)
        .where(Notification.training_id == training_id, Notification.channel == "webhook")
        .where(Notification.status == DeliveryStatus.pending)
        .values(status=DeliveryStatus.failed, last_error="the endpoint answered 410 Gone earlier")
    )


@shared_task(name=DELIVER, acks_late=True, soft_time_limit=120, time_limit=150)
def deliver_task(notification_id: str) -> str:
    outcome = deliver(
        uuid.UUID(notification_id), sessions=session_factory(), storage=get_storage(), settings=get_settings()
    )
    log.info("notify.deliver %s: %s", notification_id, outcome)
    return outcome
