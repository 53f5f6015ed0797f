"""What a generation request resolves to: image size, sampler settings and experiments.

Pure Python, no torch: the API validates and resolves a request with it, and the worker and
`lookalike generate` use the same rules, so a request means the same image everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.trainings import catalog

# Width:height ratios people pick in every hosted UI (Replicate's FLUX models take the same names).
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1, 1),
    "2:3": (2, 3),
    "3:2": (3, 2),
    "4:5": (4, 5),
    "5:4": (5, 4),
    "9:16": (9, 16),
    "16:9": (16, 9),
}
OUTPUT_FORMATS = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS = {"png": "png", "jpg": "jpg", "webp": "webp"}
MAX_OUTPUTS = 8
MAX_IMAGES = 32  # one request's images in all: outputs x sweep scales or matrix values
# Where people settle with a face LoRA: 1.0 copies the training photos' lighting and framing too.
DEFAULT_LORA_SCALE = 0.8
DEFAULT_PROMPT_STRENGTH = 0.8
# "From untrained to fully trained": 0 is the base model alone, 1.2 past the trained strength.
SWEEP_SCALES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2)
MIN_SIDE, MAX_SIDE = 64, 2048

# Image sides must divide by this: the VAE's factor, times FLUX's 2x2 latent packing.
MULTIPLES = {catalog.SD15: 8, catalog.SDXL: 8, catalog.FLUX: 16}


def snap(size: int, multiple: int) -> int:
    """The nearest side the family can render."""
    return max(multiple, round(size / multiple) * multiple)


def native_side(family: str, *, tiny: bool) -> int:
    """The side the family was trained at: images of that area look best."""
    return catalog.TINY_DEFAULTS.resolution if tiny else catalog.FAMILIES[family].defaults.resolution


def image_size(
    family: str, *, tiny: bool, width: int | None, height: int | None, aspect_ratio: str | None
) -> tuple[int, int]:
    """(width, height) for a request: given sides, else the aspect ratio at the family's native area,
    snapped to the family's multiple (`ASPECT_RATIOS` names the ratios; unknown ones raise KeyError)."""
    multiple = MULTIPLES[family]
    side = native_side(family, tiny=tiny)
    rw, rh = ASPECT_RATIOS[aspect_ratio or "1:1"]
    if width is None and height is None:
        width = math.sqrt(side * side * rw / rh)
        height = width * rh / rw
    elif width is None:
        width = height * rw / rh  # type: ignore[operator]
    elif height is None:
        height = width * rh / rw
    return snap(round(width), multiple), snap(round(height), multiple)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Sampler:
    steps: int
    guidance: float
    negative_prompt: str | None


def sampler(family: str, *, tiny: bool, steps: int | None, guidance: float | None, negative: str | None) -> Sampler:
    """The request's sampler settings, the family's usual ones where it says nothing."""
    usual = catalog.sampling_for(family, tiny=tiny)
    if family == catalog.FLUX:
        negative = None  # guidance-distilled: there is no negative pass to condition
    elif negative is None:
        negative = usual.negative_prompt or None
    return Sampler(
        steps=steps if steps is not None else usual.steps,
        guidance=guidance if guidance is not None else usual.guidance,
        negative_prompt=negative or None,
    )


def with_trigger(prompt: str, trigger: str, class_word: str) -> tuple[str, bool]:
    """The prompt with "<trigger> <class word>," in front when the trigger word is missing (any case),
    and whether it was added: the assessment and generation prompt a LoRA the same way."""
    if trigger.lower() in prompt.lower():
        return prompt, False
    return f"{trigger} {class_word}, {prompt}", True
