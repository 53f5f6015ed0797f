"""Response bodies for /v1/models."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field


class ModelFile(BaseModel):
    format: str
    url: str
    size_bytes: int
    filename: str


class CheckpointQuality(BaseModel):
    step: int
    identity_similarity: float | None
    face_detection_rate: float
    memorization: float
    identity_bleed: float | None
    diversity: float | None


class Quality(BaseModel):
    """What the assessment measured on the chosen checkpoint (see docs/quality.md for the scales)."""

    score: float | None = Field(description="0-100; null when no sample had a face to measure")
    verdict: str = Field(description="excellent | good | weak | failed")
    identity_similarity: float | None = Field(
        description="0-100 likeness of the sample faces to the held-out photos (or the subject); 60 is dlib's "
        "same-person threshold (distance 0.6)"
    )
    face_detection_rate: float = Field(description="share of the trigger-word samples with a face")
    memorization: float = Field(description="share of sample faces that copy a training photo")
    identity_bleed: float | None = Field(
        description="0-100 likeness to the subject of faces in prompts without the trigger word; 60 or more: bleeds"
    )
    diversity: float | None = Field(description="0-1 spread of pose and framing across the samples")
    chosen_step: int = Field(description="the step whose weights the files hold")
    advice: str
    held_out_photos: int = Field(description="photos kept out of training as the likeness reference")
    reference: str | None = Field(description="held_out | identity: what likeness was measured against")
    checkpoints: list[CheckpointQuality]


class SampleRead(BaseModel):
    url: str
    step: int
    label: str
    prompt: str
    kind: str = Field(description="subject (with the trigger word) | bleed (without it)")
    seed: int
    faces: int
    identity_similarity: float | None
    memorized: bool
    chosen: bool = Field(description="from the checkpoint the files were exported from")


class ModelRead(BaseModel):
    id: uuid.UUID
    training_id: uuid.UUID | None
    subject_id: uuid.UUID | None
    name: str
    base_model: str
    family: str
    trigger_word: str
    rank: int
    quality: Quality | None = Field(
        description="the quality assessment's; null when it could not run (the model is the final weights, unassessed)"
    )
    samples: list[SampleRead]
    contact_sheet_url: str | None = Field(description="every sample, checkpoint by prompt, with its score")
    files: list[ModelFile]
    created_at: datetime
    notice: str | None = None
