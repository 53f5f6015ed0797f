"""Request and response bodies for /v1/trainings."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from app.notify.outbox import WEBHOOK_EVENTS
from app.trainings.catalog import LIMITS
from app.trainings.trigger import VALID

# What the validators below check, said in the schema too (a generated client can check it first).
PROMPT = {"minLength": 1, "maxLength": 500, "pattern": r"\S"}


class TrainingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject_id: uuid.UUID
    name: str = Field(min_length=1, max_length=100)
    base_model: str | None = Field(default=None, max_length=300, description="preset, Hub id or local folder")
    trigger_word: str | None = Field(default=None, pattern=VALID.pattern, description="generated when omitted")
    steps: int | None = Field(default=None, ge=LIMITS["steps"][0], le=LIMITS["steps"][1])
    learning_rate: float | None = Field(default=None, ge=LIMITS["learning_rate"][0], le=LIMITS["learning_rate"][1])
    rank: int | None = Field(default=None, ge=LIMITS["rank"][0], le=LIMITS["rank"][1])
    resolution: int | None = Field(
        default=None, ge=LIMITS["resolution"][0], le=LIMITS["resolution"][1], json_schema_extra={"multipleOf": 64}
    )
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    batch_size: int | None = Field(default=None, ge=1, le=16)
    face_weight: float | None = Field(default=None, ge=1.0, le=10.0, description="1.0 turns face weighting off")
    gradient_checkpointing: bool | None = None
    autocaption: bool | None = Field(
        default=None,
        description="false: train only with your .txt captions (else the trigger word and class word), "
        "not the analysis' automatic captions",
    )
    validation_prompts: list[str] = Field(
        default_factory=list, max_length=10, json_schema_extra={"items": {"type": "string", **PROMPT}}
    )
    webhook_url: AnyHttpUrl | None = None
    webhook_events: list[str] = Field(
        default_factory=list,
        json_schema_extra={"items": {"type": "string", "enum": list(WEBHOOK_EVENTS)}},
        description="which events to send; empty: every one but training.progress (that one is throttled)",
    )

    @field_validator("trigger_word")
    @classmethod
    def _trigger(cls, value: str | None) -> str | None:
        if value is not None and not VALID.match(value):
            raise ValueError("must be 2-32 letters, digits, '-' or '_', starting with a letter")
        return value

    @field_validator("resolution")
    @classmethod
    def _multiple_of_64(cls, value: int | None) -> int | None:
        if value is not None and value % 64:
            raise ValueError("must be a multiple of 64 (the aspect buckets are built from 64-pixel steps)")
        return value

    @field_validator("validation_prompts")
    @classmethod
    def _prompts(cls, value: list[str]) -> list[str]:
        if any(not p.strip() or len(p) > 500 for p in value):
            raise ValueError("each prompt must be 1-500 characters")
        return value

    @field_validator("webhook_events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(WEBHOOK_EVENTS))
        if unknown:
            raise ValueError(f"unknown events {unknown}; known: {list(WEBHOOK_EVENTS)}")
        return value


class ProgressRead(BaseModel):
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    eta_seconds: float | None = None
    percent: float = 0.0


class ErrorInfo(BaseModel):
    code: str
    message: str
    hint: str | None = None


class TrainingRead(BaseModel):
    id: uuid.UUID
    subject_id: uuid.UUID
    name: str
    base_model: str
    family: str
    trigger_word: str
    status: str
    progress: ProgressRead
    error: ErrorInfo | None
    settings: dict[str, Any]
    validation_prompts: list[str]
    webhook_url: str | None
    webhook_events: list[str]
    phases: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    model_id: uuid.UUID | None
    notice: str | None = Field(default=None, description="set when the base model is a tiny test model")


class AttemptRead(BaseModel):
    at: datetime
    outcome: str = Field(description="sent | retry | failed")
    status_code: int | None = Field(description="the endpoint's HTTP status; null when it could not be reached")
    error: str | None
    duration_ms: int | None


class DeliveryRead(BaseModel):
    id: uuid.UUID = Field(description="the webhook-id header: the same on every attempt")
    event: str
    url: str
    status: str = Field(description="pending | sending | sent | failed")
    created_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    last_error: str | None
    attempts: list[AttemptRead]
