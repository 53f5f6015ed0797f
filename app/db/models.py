"""The tables: users and their API keys, subjects (the people) and their photos."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, IdMixin, TimestampMixin, UTCDateTime


class User(IdMixin, TimestampMixin, Base):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)
    # Signs the user's webhooks (Standard Webhooks, `whsec_...`): shown once when made or rotated.
    webhook_secret: Mapped[str | None] = mapped_column(String(128))

    api_keys: Mapped[list[ApiKey]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class ApiKey(IdMixin, TimestampMixin, Base):
    """A key is shown once; only its SHA-256 is kept. `prefix` identifies it in listings."""

    __tablename__ = "api_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    prefix: Mapped[str] = mapped_column(String(32), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str | None] = mapped_column(String(100))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="api_keys")


class Subject(IdMixin, TimestampMixin, Base):
    """The person a model is trained on."""

    __tablename__ = "subjects"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    class_word: Mapped[str] = mapped_column(String(32), nullable=False)
    consent_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # The version of the consent statement the user agreed to (app.subjects.consent); never null, so
    # no subject exists, and nothing is uploaded or trained, without recorded consent.
    consent_version: Mapped[str] = mapped_column(String(32), nullable=False)
    # Set by the subject review: the mean 128-d encoding (float32) of the largest cluster of faces.
    identity: Mapped[bytes | None] = mapped_column(LargeBinary)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PhotoStatus(enum.StrEnum):
    pending = "pending"
    analyzed = "analyzed"
    failed = "failed"


class Photo(IdMixin, TimestampMixin, Base):
    """One uploaded image, stored without metadata, and what analysis found in it."""

    __tablename__ = "photos"
    __table_args__ = (
        Index("ix_photos_subject_id_id", "subject_id", "id"),
        Index("ix_photos_subject_id_sha256", "subject_id", "sha256"),
        Index("ix_photos_status", "status"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    subject_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("subjects.id", ondelete="CASCADE"), nullable=False)
    filename: Mapped[str] = mapped_column(String(1024), nullable=False)
    # What the bytes were (JPEG, PNG, WEBP, HEIF) and what we stored them as.
    source_format: Mapped[str] = mapped_column(String(16), nullable=False)
    stored_ext: Mapped[str] = mapped_column(String(8), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    # Recorded by analysis from the stored image (upright, after EXIF orientation).
    format: Mapped[str | None] = mapped_column(String(16))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    caption: Mapped[str | None] = mapped_column(Text)
    excluded: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)

    status: Mapped[str] = mapped_column(String(16), default=PhotoStatus.pending, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    analyzed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    analysis_attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    # When a worker took the photo (its claim; stale after the analysis time limit).
    analysis_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When its current wait for a worker began or a message was last sent (None: at upload), and
    # how many times the housekeeping sweep has sent it again since (each resend waits twice as long).
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resends: Mapped[int] = mapped_column(Integer, default=0, nullable=False)

    # Filled by the analysis step.
    verdict: Mapped[str | None] = mapped_column(String(16))
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, nullable=False)
    face_count: Mapped[int | None] = mapped_column(Integer)
    face_box: Mapped[list[int] | None] = mapped_column(JSON)
    pose: Mapped[str | None] = mapped_column(String(16))
    shot: Mapped[str | None] = mapped_column(String(16))
    sharpness: Mapped[float | None] = mapped_column(Float)
    brightness: Mapped[float | None] = mapped_column(Float)
    duplicate_of: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    identity_distance: Mapped[float | None] = mapped_column(Float)
    selected: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    has_thumb: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    has_crop: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # Analysis details the subject review and training read (boxes in stored-image pixels).
    faces: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, nullable=False)
    face_index: Mapped[int | None] = mapped_column(Integer)  # which of `faces` is the subject
    encodings: Mapped[bytes | None] = mapped_column(LargeBinary)  # float32, 128 per encoded face
    signature: Mapped[bytes | None] = mapped_column(LargeBinary)  # see worker.analysis.measures
    phash: Mapped[str | None] = mapped_column(String(16))
    quality: Mapped[float | None] = mapped_column(Float)
    crop_box: Mapped[list[int] | None] = mapped_column(JSON)
    square_box: Mapped[list[int] | None] = mapped_column(JSON)
    auto_caption: Mapped[str | None] = mapped_column(Text)


class TrainingStatus(enum.StrEnum):
    queued = "queued"
    preparing = "preparing"
    training = "training"
    assessing = "assessing"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"


ACTIVE_TRAINING = (TrainingStatus.queued, TrainingStatus.preparing, TrainingStatus.training, TrainingStatus.assessing)
RUNNING_TRAINING = (TrainingStatus.preparing, TrainingStatus.training, TrainingStatus.assessing)


class Training(IdMixin, TimestampMixin, Base):
    """One LoRA training job; the row is the truth, the broker only carries its id."""

    __tablename__ = "trainings"
    __table_args__ = (
        Index("ix_trainings_user_id_status", "user_id", "status"),
        Index("ix_trainings_status", "status"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    subject_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("subjects.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    base_model: Mapped[str] = mapped_column(String(300), nullable=False)
    family: Mapped[str] = mapped_column(String(16), nullable=False)
    tiny: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    trigger_word: Mapped[str] = mapped_column(String(64), nullable=False)
    trigger_generated: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # steps, learning_rate, rank, resolution, seed, batch_size, face_weight, ... as resolved at creation.
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    validation_prompts: Mapped[list[str]] = mapped_column(JSON, default=list, nullable=False)
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_events: Mapped[list[str]] = mapped_column(JSON, default=list, nullable=False)
    # Set when the endpoint answered 410 Gone: nothing more is sent to it for this training.
    webhook_disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the last `training.progress` webhook was queued (they are throttled).
    progress_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    status: Mapped[str] = mapped_column(String(16), default=TrainingStatus.queued, nullable=False)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # When each phase began and the run ended: {"preparing": iso, "training": iso, ..., "succeeded": iso}.
    phases: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The lease of the worker running it: a redelivered task waits until the heartbeat is stale.
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    worker_token: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Workers that died holding the lease (counted by the housekeeping sweep); the job fails at the limit.
    lost_workers: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    # When its current wait for a worker began or a message was last sent (None: at creation), and
    # how many times the housekeeping sweep has sent it again since (each resend waits twice as long).
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resends: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    model_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Queued, but its photos are still being analysed (a training started from a zip through the
    # Replicate-compatible API): sent to a worker once the subject review has judged them.
    awaiting_photos: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # The Replicate-style model its weights become a version of (`destination`), and what that
    # client sent (trainer version, input), to answer in Replicate's shape.
    replicate_model_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("replicate_models.id", ondelete="SET NULL"), index=True
    )
    client: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Model(IdMixin, TimestampMixin, Base):
    """A trained LoRA: what a training produced, downloadable in two formats."""

    __tablename__ = "models"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    training_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("trainings.id", ondelete="SET NULL"), unique=True
    )
    subject_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("subjects.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    base_model: Mapped[str] = mapped_column(String(300), nullable=False)
    family: Mapped[str] = mapped_column(String(16), nullable=False)
    tiny: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    trigger_word: Mapped[str] = mapped_column(String(64), nullable=False)
    rank: Mapped[int] = mapped_column(Integer, nullable=False)
    # {"diffusers": {"key": ..., "size_bytes": ...}, "kohya": {...}}
    files: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    samples: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, nullable=False)
    # The Replicate-style model this LoRA is a version of, when a training named one as destination.
    replicate_model_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("replicate_models.id", ondelete="SET NULL"), index=True
    )


class GenerationStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"


ACTIVE_GENERATION = (GenerationStatus.queued, GenerationStatus.running)
FINISHED_GENERATION = (GenerationStatus.succeeded, GenerationStatus.failed, GenerationStatus.canceled)


class Generation(IdMixin, TimestampMixin, Base):
    """Images made with one or more LoRAs on a base model; the row is the truth, as for trainings."""

    __tablename__ = "generations"
    __table_args__ = (
        Index("ix_generations_user_id_id", "user_id", "id"),
        Index("ix_generations_status", "status"),
        # Deleting a photo (or its subject) finds the generations started from it.
        Index("ix_generations_start_photo_id", "start_photo_id"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    # The first of its LoRAs that is one of the user's models (None: only files or URLs).
    model_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("models.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # images | sweep | matrix
    base_model: Mapped[str] = mapped_column(String(300), nullable=False)
    family: Mapped[str] = mapped_column(String(16), nullable=False)
    tiny: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    prompt: Mapped[str] = mapped_column(Text, nullable=False)  # as sent
    trigger_inserted: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # Resolved settings: prompt used, size, steps, guidance, seed, scales, formats, the experiment.
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    # [{"kind": "model"|"file"|"url", "id" or "url", "key", "scale", "name", "sha256"}], in order.
    loras: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    image_key: Mapped[str | None] = mapped_column(String(1024))  # img2img's start image, copied in
    # The photo that start image was copied from (None: an uploaded file, or no start image). Deleting
    # the photo or its subject deletes the generation, row and stored objects (app.privacy.erase). No
    # foreign key: a cascade would take the row and leave the face's copy in storage, SET NULL would
    # forget which photo it was; the deleting code removes both itself.
    start_photo_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    status: Mapped[str] = mapped_column(String(16), default=GenerationStatus.queued, nullable=False)
    # [{"key", "content_type", "size_bytes", "seed", "label", "scale", "prompt"}], in order.
    outputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, nullable=False)
    sheet_key: Mapped[str | None] = mapped_column(String(1024))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    logs: Mapped[str] = mapped_column(Text, default="", nullable=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    # What a Replicate-style client sent (model, version, input, whether it waited).
    client: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The worker's claim, and the sweep's bookkeeping, as for trainings.
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    worker_token: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resends: Mapped[int] = mapped_column(Integer, default=0, nullable=False)


class UploadedFile(IdMixin, TimestampMixin, Base):
    """A file a user uploaded to use as an input: a LoRA (.safetensors), a start image, a zip of photos."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_user_id_id", "user_id", "id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    content_type: Mapped[str] = mapped_column(String(100), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    key: Mapped[str] = mapped_column(String(1024), nullable=False)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict, nullable=False)


class ReplicateModel(IdMixin, TimestampMixin, Base):
    """A named model in the Replicate-compatible API (`owner/name`); its versions are the user's Models."""

    __tablename__ = "replicate_models"
    __table_args__ = (UniqueConstraint("user_id", "owner", "name", name="uq_replicate_models_user_owner_name"),)

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    owner: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    visibility: Mapped[str] = mapped_column(String(16), nullable=False)
    hardware: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    run_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)


class DeliveryStatus(enum.StrEnum):
    pending = "pending"  # waiting for its next attempt (at `next_attempt_at`)
    sending = "sending"  # claimed by a worker (since `claimed_at`)
    sent = "sent"
    failed = "failed"  # a permanent refusal, or out of attempts


class Notification(IdMixin, TimestampMixin, Base):
    """The outbox: one email or webhook, written in the same transaction as the event it announces.

    `notify.deliver` sends it; the housekeeping sweep sends again what is overdue. `payload` is
    what was true at the event (for a webhook, the JSON body sent on every attempt).
    """

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_status_next", "status", "next_attempt_at"),)

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    training_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("trainings.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(16), nullable=False)  # email | webhook
    event: Mapped[str] = mapped_column(String(64), nullable=False)  # training.succeeded, ...
    target: Mapped[str] = mapped_column(String(2048), nullable=False)  # an address or a URL
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.pending, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claim_token: Mapped[str | None] = mapped_column(String(64))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)

    delivery_attempts: Mapped[list[DeliveryAttempt]] = relationship(
        back_populates="notification",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="DeliveryAttempt.id",
    )


class DeliveryAttempt(IdMixin, Base):
    """One try at sending a notification, readable by its owner (webhooks: GET .../deliveries)."""

    __tablename__ = "delivery_attempts"

    notification_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("notifications.id", ondelete="CASCADE"), nullable=False, index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)  # sent | retry | failed
    status_code: Mapped[int | None] = mapped_column(Integer)  # HTTP status, or SMTP reply code
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(Integer)

    notification: Mapped[Notification] = relationship(back_populates="delivery_attempts")


class Lock(Base):
    """A named lease in the database, so one holder at a time across processes and machines."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(IdMixin, TimestampMixin, Base):
    """One thing that matters, recorded in the transaction that did it: who, what, to what, from where.

    Never secrets or image data: the actor is `api_key:<display prefix>`, `cli` or `system`, and
    `details` holds a few plain values. Rows naming a user go with the user (ON DELETE CASCADE).
    """

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_user_id_id", "user_id", "id"),)

    # None for what no user owns: a sign-in with an unknown key, a deleted account.
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    actor: Mapped[str] = mapped_column(String(64), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    ip_address: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
