from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SubjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="How you call this person")
    class_word: str = Field(
        default="person",
        min_length=2,
        max_length=32,
        pattern=r"^[a-z]+( [a-z]+)?$",
        description="What the person is, in one or two lowercase words: man, woman, person, boy, girl…",
    )
    consent: bool = Field(description="You are this person or have their permission to train a model of them")

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
    created_at: datetime
    photos: PhotoCounts
