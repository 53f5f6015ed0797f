from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Reason(BaseModel):
    """A stable `code`, a plain-language `message`, and the numbers behind it (distance, size…)."""

    model_config = ConfigDict(extra="allow")

    code: str
    message: str


class PhotoRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    subject_id: uuid.UUID
    filename: str = Field(description="As uploaded; for archives the zip's name and the path inside it")
    status: str = Field(description="pending | analyzed | failed")
    error: str | None = None
    source_format: str = Field(description="What the uploaded bytes were: JPEG, PNG, WebP or HEIC")
    format: str | None = Field(None, description="Stored format, recorded by analysis")
    size_bytes: int = Field(description="Size of the uploaded file")
    width: int | None = None
    height: int | None = None
    caption: str | None = Field(None, description="Your caption; training uses it as given")
    auto_caption: str | None = Field(
        None,
        description="Used when there is no caption; {trigger} becomes the trigger word at training. "
        "None for a photo without a face (it is never trained on)",
    )
    excluded: bool = False
    selected: bool = False
    verdict: str | None = Field(None, description="accepted | warning | rejected, once analysed")
    reasons: list[Reason] = []
    face_count: int | None = None
    face_box: list[int] | None = None
    pose: str | None = None
    shot: str | None = None
    sharpness: float | None = None
    brightness: float | None = None
    duplicate_of: uuid.UUID | None = None
    identity_distance: float | None = None
    quality: float | None = Field(None, description="0..1, sharpness and face resolution first")
    crop_box: list[int] | None = Field(None, description="The training crop (left, top, right, bottom)")
    square_box: list[int] | None = Field(None, description="The square crop around the same framing")
    created_at: datetime
    analyzed_at: datetime | None = None
    urls: dict[str, str]


class RejectedFile(BaseModel):
    filename: str
    error: dict[str, Any]


class UploadResult(BaseModel):
    photos: list[PhotoRead]
    rejected: list[RejectedFile]


class PhotoUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    caption: str | None = Field(default=None, max_length=1000, description="Empty string or null clears it")
    excluded: bool | None = None
