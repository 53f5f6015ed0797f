"""A training's settings, resolved once from the request (or the CLI's flags), the family's defaults and the
service's settings. The API stores them on the row; the worker and `lookalike train` read only them.
"""

from __future__ import annotations

import uuid
from typing import Any

from app.trainings.catalog import BaseModel

# What a training's `params` holds besides `source`: the knobs that change the trained weights.
TRAINING_KNOBS = (
    "steps",
    "learning_rate",
    "rank",
    "resolution",
    "multires",
    "seed",
    "batch_size",
    "face_weight",
    "gradient_checkpointing",
    "autocaption",
)


def resolve_params(
    base: BaseModel,
    *,
    steps: int | None = None,
    learning_rate: float | None = None,
    rank: int | None = None,
    resolution: int | None = None,
    seed: int | None = None,
    batch_size: int | None = None,
    face_weight: float | None = None,
    gradient_checkpointing: bool | None = None,
    autocaption: bool | None = None,
) -> dict[str, Any]:
    """Each knob as given, else the base model's default; a random seed when none is given.

    `autocaption` is kept only when given (false: no automatic captions), so older rows read the same.
    """
    d = base.defaults
    params = {
        "steps": steps or d.steps,
        "learning_rate": learning_rate or d.learning_rate,
        "rank": rank or d.rank,
        "resolution": resolution or d.resolution,
        "multires": list(d.multires),
        "seed": seed if seed is not None else int(uuid.uuid4().int % 2**31),
        "batch_size": batch_size,
        "face_weight": face_weight if face_weight is not None else d.face_weight,
        "gradient_checkpointing": gradient_checkpointing
        if gradient_checkpointing is not None
        else d.gradient_checkpointing,
        "source": base.source,
    }
    if autocaption is not None:
        params["autocaption"] = autocaption
    return params


def public_params(params: dict[str, Any]) -> dict[str, Any]:
    """The settings a user sees (the API's `settings`, the files' metadata): the knobs, not where weights live."""
    return {k: v for k, v in params.items() if k != "source"}
