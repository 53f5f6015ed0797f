"""Request and response bodies for /v1/generations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.generations.params import (
    ASPECT_RATIOS,
    DEFAULT_LORA_SCALE,
    DEFAULT_PROMPT_STRENGTH,
    MAX_OUTPUTS,
    MAX_SIDE,
    MIN_SIDE,
    SWEEP_SCALES,
)

AspectRatio = Literal["1:1", "2:3", "3:2", "4:5", "5:4", "9:16", "16:9"]
assert set(AspectRatio.__args__) == set(ASPECT_RATIOS)  # noqa: S101 - one list, spelled twice for the schema


def _set(*names: str) -> dict:
    """JSON Schema for "these fields are present and not null" (the models' cross-field rules, said in the
    schema so that a generated client, or schemathesis, knows them)."""
    return {"required": list(names), "properties": {n: {"not": {"type": "null"}} for n in names}}


class LoraRef(BaseModel):
    """One LoRA: one of your models, a file you uploaded (POST /v1/files), or a .safetensors URL."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"oneOf": [_set("model_id"), _set("file_id"), _set("url")]}
    )

    model_id: uuid.UUID | None = None
    file_id: uuid.UUID | None = None
    url: str | None = Field(
        default=None,
        max_length=2048,
        json_schema_extra={"pattern": r"^https?://"},  # checked, with a worded refusal, by the service
        description="an https URL of a .safetensors LoRA",
    )
    scale: float | None = Field(default=None, ge=-2.0, le=2.0, description="default: lora_scale")

    @model_validator(mode="after")
    def _one_source(self) -> LoraRef:
        given = [x for x in (self.model_id, self.file_id, self.url) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of model_id, file_id or url")
        return self


class Sweep(BaseModel):
    """A LoRA-strength sweep of the first LoRA: one image per scale, same prompt and seed."""

    model_config = ConfigDict(extra="forbid")

    scales: list[float] = Field(
        default=list(SWEEP_SCALES),
        min_length=2,
        max_length=16,
        json_schema_extra={"items": {"type": "number", "minimum": -2.0, "maximum": 2.0}},
    )

    @model_validator(mode="after")
    def _range(self) -> Sweep:
        if any(not -2.0 <= s <= 2.0 for s in self.scales):
            raise ValueError("scales must be between -2 and 2")
        return self


class Matrix(BaseModel):
    """A prompt matrix: `{name}` in the prompt replaced by each value, same seed (e.g. ages 20 to 80); a prompt
    without `{name}` gets each value at its end."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,31}$", description="the placeholder, used as {name}")
    values: list[str] = Field(
        min_length=2,
        max_length=16,
        json_schema_extra={"items": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"\S"}},
    )

    @model_validator(mode="after")
    def _values(self) -> Matrix:
        if any(not v.strip() or len(v) > 200 for v in self.values):
            raise ValueError("each value must be 1-200 characters")
        return self


class ImageOptions(BaseModel):
    """What one image is made with: the options shared by a generation and `POST /v1/models/{id}/image`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"not": _set("width", "height", "aspect_ratio")})

    loras: list[LoraRef] = Field(default_factory=list, max_length=4, description="several LoRAs, applied together")
    prompt: str = Field(min_length=1, max_length=2000, description="the trigger word is put in front when missing")
    negative_prompt: str | None = Field(default=None, max_length=2000, description="ignored by FLUX (no CFG pass)")
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1, description="random when omitted; output i uses seed+i")
    width: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE)
    height: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE)
    aspect_ratio: AspectRatio | None = Field(default=None, description="at the family's native area; default 1:1")
    num_inference_steps: int | None = Field(default=None, ge=1, le=100)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=30.0)
    lora_scale: float = Field(default=DEFAULT_LORA_SCALE, ge=-2.0, le=2.0)
    image: str | None = Field(default=None, description="img2img start image: a photo id or a file id")
    prompt_strength: float = Field(default=DEFAULT_PROMPT_STRENGTH, gt=0.0, le=1.0, description="1.0 ignores image")
    output_format: Literal["png", "jpg", "webp"] = "webp"
    output_quality: int = Field(default=90, ge=1, le=100, description="jpg and webp")

    @model_validator(mode="after")
    def _size(self) -> ImageOptions:
        if self.width is not None and self.height is not None and self.aspect_ratio is not None:
            raise ValueError("give width and height, or aspect_ratio, not all three")
        return self


class GenerationCreate(ImageOptions):
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {"not": _set("width", "height", "aspect_ratio")},
                {"not": _set("sweep", "matrix")},
                {"anyOf": [_set("model_id"), {"required": ["loras"], "properties": {"loras": {"minItems": 1}}}]},
            ]
        }
    )

    model_id: uuid.UUID | None = Field(default=None, description="one of your models (or use `loras`)")
    base_model: str | None = Field(
        default=None, max_length=300, description="default: the first model's base (required with only files/URLs)"
    )
    num_outputs: int = Field(default=1, ge=1, le=MAX_OUTPUTS)
    sweep: Sweep | None = Field(default=None, description="a LoRA-strength sweep of the first LoRA")
    matrix: Matrix | None = Field(default=None, description="a prompt matrix")

    @model_validator(mode="after")
    def _consistent(self) -> GenerationCreate:
        if self.model_id is None and not self.loras:
            raise ValueError("give model_id or at least one entry in loras")
        if self.sweep is not None and self.matrix is not None:
            raise ValueError("give sweep or matrix, not both")
        if self.matrix is not None and "{" + self.matrix.name + "}" not in self.prompt:
            # No place for the values in the prompt: each goes at its end.
            self.prompt = f"{self.prompt}, {{{self.matrix.name}}}"
        return self


class ModelImageCreate(ImageOptions):
    """One image from one of your models (plus up to three more LoRAs), answered as the image itself."""

    loras: list[LoraRef] = Field(default_factory=list, max_length=3, description="more LoRAs, e.g. a style")
    output_format: Literal["png", "jpg", "webp"] = "png"


class OutputRead(BaseModel):
    url: str
    content_type: str
    seed: int
    label: str | None = Field(description="the sweep's scale or the matrix value")
    lora_scale: float | None = None
    prompt: str


class GenerationRead(BaseModel):
    id: uuid.UUID
    status: str = Field(description="queued | running | succeeded | failed | canceled")
    model_id: uuid.UUID | None
    kind: str = Field(description="images | sweep | matrix")
    base_model: str
    family: str
    prompt: str = Field(description="the prompt used, trigger word included")
    trigger_word_inserted: bool
    settings: dict[str, Any]
    loras: list[dict[str, Any]]
    outputs: list[OutputRead]
    contact_sheet_url: str | None
    error: dict[str, Any] | None
    metrics: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    notice: str | None = None
