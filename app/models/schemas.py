"""Response bodies for /v1/models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class ModelFile(BaseModel):
    format: str
    url: str
    size_bytes: int
    filename: str


class ModelRead(BaseModel):
    id: uuid.UUID
    training_id: uuid.UUID | None
    subject_id: uuid.UUID | None
    name: str
    base_model: str
    family: str
    trigger_word: str
    rank: int
    quality: dict[str, Any] | None = Field(description="filled by the quality assessment; null until it runs")
    samples: list[dict[str, Any]]
    files: list[ModelFile]
    created_at: datetime
    notice: str | None = None
