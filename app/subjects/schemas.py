from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.subjects.consent import CONSENT_VERSION


class SubjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"\S", description="How you call this person")
    class_word: str = Field(
        default="person",
        min_length=2,
        max_length=32,
        pattern=r"^[a-z]+( [a-z]+)?$",
        description="What the person is, in one or two lowercase words: man, woman, person, boy, girl…",
    )
    consent: bool = Field(
        description="You are this person or have their permission to train a model of them: must be true",
        # The document says only `true` is accepted; `false` still gets a worded 422 (consent_required).
        json_schema_extra={"const": True},
    )
    consent_version: str | None = Field(
        default=None,
        max_length=32,
        json_schema_extra={"enum": [CONSENT_VERSION, None]},
        description="The `version` of the statement from GET /v1/consent that was agreed to (default: the current)",
    )

    @field_validator("name")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be blank")
        return value


class PhotoCounts(BaseModel):
    total: int = 0
    pending: int = 0
    analyzed: int = 0
    failed: int = 0


class SubjectRead(BaseModel):
    id: uuid.UUID
    name: str
    class_word: str
    consent: bool = True
    consent_at: datetime
    consent_version: str = Field(description="The consent statement agreed to (`unversioned`: before versions)")
    created_at: datetime
    photos: PhotoCounts


class Advice(BaseModel):
    code: str
    message: str


class SubjectReport(BaseModel):
    """The dataset verdict: counts of usable photos by shot, pose and light, problems and advice."""

    subject_id: uuid.UUID
    reviewed_at: datetime | None = Field(description="When the photos were last judged together")
    ready_to_train: bool = Field(description="No problems: analysis done, enough usable photos, one clear identity")
    photos: dict[str, int] = Field(
        description="total, pending, failed, analyzed, accepted, warning, rejected, excluded, usable, selected"
    )
    min_photos: int
    max_photos: int = Field(description="At most this many of the usable photos are selected for training")
    recommended_photos: list[int]
    by_shot: dict[str, int]
    by_pose: dict[str, int]
    by_lighting: dict[str, int]
    rejected_by_reason: dict[str, int]
    warnings_by_reason: dict[str, int]
    identity: dict[str, float | int | None]
    problems: list[Advice] = Field(description="What must change before training; empty when ready")
    advice: list[Advice] = Field(description="What would make the model better")


class ConsentRead(BaseModel):
    """The consent statement to show before creating a subject."""

    version: str = Field(description="Send it as `consent_version` with POST /v1/subjects")
    text: str
