"""Request and response bodies of the Replicate-compatible API, field for field as the `replicate` client reads them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

# Replicate's owner and model names: letters, digits, dashes, underscores and periods.
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
Status = Literal["starting", "processing", "succeeded", "failed", "canceled"]


class Page(BaseModel, Generic[T]):
    """Replicate's list shape: `next` and `previous` are URLs to request as they are."""

    results: list[T]
    next: str | None = None
    previous: str | None = None


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")  # github_url, paper_url, ...: accepted, not kept

    owner: str = Field(min_length=1, max_length=64, pattern=NAME, description="any owner name you like")
    name: str = Field(min_length=1, max_length=100, pattern=NAME)
    visibility: Literal["public", "private"] = "private"
    hardware: str | None = Field(default=None, max_length=64, description="recorded; the workers decide")
    description: str | None = Field(default=None, max_length=5000)


class VersionRead(BaseModel):
    id: str = Field(description="the Lookalike model's id, 32 hex digits")
    created_at: datetime
    cog_version: str
    openapi_schema: dict[str, Any]


class ModelRead(BaseModel):
    url: str
    owner: str
    name: str
    description: str | None
    visibility: Literal["public", "private"]
    github_url: str | None = None
    paper_url: str | None = None
    license_url: str | None = None
    run_count: int
    cover_image_url: str | None = None
    default_example: dict[str, Any] | None = None
    latest_version: VersionRead | None


class PredictionCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str | None = Field(default=None, description="a version id, or owner/name:version")
    input: dict[str, Any] = Field(default_factory=dict)
    webhook: str | None = None
    webhook_completed: str | None = None
    webhook_events_filter: list[str] | None = None
    stream: bool | None = None


class TrainingCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    destination: str = Field(description="owner/name of a model you created with POST /v1/models")
    input: dict[str, Any] = Field(default_factory=dict)
    webhook: str | None = None
    webhook_completed: str | None = None
    webhook_events_filter: list[str] | None = None


class PredictionRead(BaseModel):
    id: str
    model: str
    version: str
    status: Status
    input: dict[str, Any]
    output: Any = None
    error: str | None = None
    logs: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    urls: dict[str, str]
    source: str = "api"
    data_removed: bool = False


class TrainingRead(PredictionRead):
    destination: str | None = None


class FileRead(BaseModel):
    id: str
    name: str
    content_type: str
    size: int
    etag: str
    checksums: dict[str, str]
    metadata: dict[str, Any]
    created_at: datetime
    expires_at: datetime | None = None
    urls: dict[str, str]
