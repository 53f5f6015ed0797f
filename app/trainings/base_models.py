"""/v1/base-models: the presets a training can start from, with their defaults and whether this
service can train them now. A client (the web page) shows these instead of hard-coding them."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.core.deps import AppSettings, CurrentUser
from app.core.errors import AppError
from app.core.pagination import Page
from app.core.settings import Settings
from app.trainings import catalog
from app.trainings.service import check_runnable

router = APIRouter(prefix="/v1/base-models", tags=["trainings"])


class TrainingDefaults(BaseModel):
    steps: int
    learning_rate: float
    rank: int
    resolution: int
    face_weight: float
    gradient_checkpointing: bool


class BaseModelRead(BaseModel):
    name: str = Field(description="what to pass as `base_model` in POST /v1/trainings")
    family: str = Field(description="sd15 | sdxl | flux")
    label: str = Field(description="a name for people")
    tiny: bool = Field(description="a test model with random weights: it trains in seconds, its images are noise")
    default: bool = Field(description="used when a training gives no base_model")
    runnable: bool = Field(description="whether this service can train it now (full-size models need a GPU)")
    reason: str | None = Field(description="why not, when runnable is false")
    source: str = Field(description="where its weights come from: a Hub id, or generated here for tiny presets")
    defaults: TrainingDefaults


def _read(name: str, settings: Settings) -> BaseModelRead:
    base = catalog.resolve(name)
    family = catalog.FAMILIES[base.family]
    try:
        check_runnable(base, settings)
        runnable, reason = True, None
    except AppError as exc:
        runnable, reason = False, exc.message
    d = base.defaults
    return BaseModelRead(
        name=name,
        family=base.family,
        label=f"{family.label} (tiny test model)" if base.tiny else family.label,
        tiny=base.tiny,
        default=name == catalog.default_base_model(settings.default_base_model),
        runnable=runnable,
        reason=reason,
        source="generated on this machine" if base.tiny else base.source,
        defaults=TrainingDefaults(**{name: getattr(d, name) for name in TrainingDefaults.model_fields}),
    )


@router.get("", response_model=Page[BaseModelRead])
def list_base_models(_: CurrentUser, settings: AppSettings) -> Page[BaseModelRead]:
    """The presets, full-size first (one page); any diffusers Hub id or local folder of a supported family
    works too."""
    return Page(items=[_read(name, settings) for name in catalog.PRESETS])
