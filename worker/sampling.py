"""Sampling with a loaded base model and LoRA weights: written once for the quality assessment and generation.

A `Family` (see `worker.training.families`) renders one image from ready text conditioning
(`Family.render`); this module puts LoRA weights into its denoiser and renders a list of
requests with the family's usual inference settings (`app.trainings.catalog.Sampling`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from app.generations.params import snap
from app.trainings.catalog import Sampling
from worker.training.families import Family
from worker.training.families.base import Cond


@dataclass(frozen=True)
class SampleRequest:
    prompt: str
    seed: int
    width: int
    height: int


def use_lora(family: Family, state: dict[str, torch.Tensor]) -> None:
    """Put a peft LoRA state dict (as the trainer keeps it) into the denoiser's adapter."""
    from peft.utils import set_peft_model_state_dict

    set_peft_model_state_dict(family.denoiser, state)


def render_all(
    family: Family,
    requests: Sequence[SampleRequest],
    conds: dict[str, Cond],
    sampling: Sampling,
    *,
    negative: Cond | None = None,
    before: Callable[[], None] = lambda: None,
) -> list[Image.Image]:
    """One image per request, in order; `conds` holds each prompt's conditioning. Requests of one size
    are drawn `sampling.batch` at a time; `before` runs before each pipeline call (it may raise to stop)."""
    images: list[Image.Image | None] = [None] * len(requests)
    sizes: dict[tuple[int, int], list[int]] = {}
    for index, request in enumerate(requests):
        sizes.setdefault((snap(request.width, family.multiple), snap(request.height, family.multiple)), []).append(
            index
        )
    for (width, height), indices in sizes.items():
        for start in range(0, len(indices), max(1, sampling.batch)):
            chunk = indices[start : start + max(1, sampling.batch)]
            before()
            drawn = family.render_batch(
                [conds[requests[i].prompt] for i in chunk],
                negative,
                seeds=[requests[i].seed for i in chunk],
                width=width,
                height=height,
                steps=sampling.steps,
                guidance=sampling.guidance,
            )
            for i, image in zip(chunk, drawn, strict=True):
                images[i] = image
    return images  # type: ignore[return-value]
