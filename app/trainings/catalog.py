"""Base models the service knows, their families, and the training defaults for each family.

Pure Python (no torch): the API validates a request with it and the worker reads the same
defaults. Any diffusers model id or local diffusers folder of a supported family works too;
its family comes from the folder's `model_index.json`, else from its name, and the worker
checks it once the model is loaded.

Defaults, and why (the trainers people use for one person's face, late 2025):
- SD1.5: 512 px, rank 16, lr 1e-4, 1,200 steps. kohya's LoRA guides and the diffusers
  DreamBooth-LoRA example train at 1e-4; 15-30 photos x ~40-80 repeats lands at 1,000-1,500
  steps. Rank 16 holds a face; 4 (the diffusers example) tends to lose likeness.
- SDXL: 1024 px, rank 16, lr 1e-4, 1,000 steps. The diffusers SDXL DreamBooth-LoRA example
  and Civitai's SDXL trainer use 1e-4; fal's and Replicate's SDXL face trainers run
  ~1,000 steps. Gradient checkpointing on (1024 px activations dominate memory).
- FLUX.1-dev: 1024 px trained together with 512 and 768 (ai-toolkit's multi-resolution
  default), rank 16, lr 4e-4, 1,000 steps: ostris' flux-dev-lora-trainer on Replicate and
  fal's fast FLUX LoRA trainer ship about these numbers; ai-toolkit's own example uses
  1e-4 for 2,000-4,000 steps, which reaches the same place twice as slowly.
- Tiny presets: 64 px, rank 4, lr 1e-3, 20 steps, so that a CPU run ends in seconds.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

SD15, SDXL, FLUX = "sd15", "sdxl", "flux"
TINY_PRESETS = ("tiny-sd15", "tiny-sdxl", "tiny-flux")


@dataclass(frozen=True)
class Defaults:
    steps: int
    learning_rate: float
    rank: int
    resolution: int
    # Extra resolutions trained alongside `resolution`, as fractions of it (ai-toolkit's 512/768/1024).
    multires: tuple[float, ...] = (1.0,)
    gradient_checkpointing: bool = False
    # Loss weight on the face relative to the rest of the image; 1.0 turns it off (see worker.training.data).
    face_weight: float = 3.0


@dataclass(frozen=True)
class Sampling:
    """The family's usual inference settings: what the quality assessment samples with, and what
    generation uses when a request does not say. SD1.5 and SDXL: 30 steps at CFG 7 (their model cards
    and the A1111/ComfyUI defaults people keep); FLUX.1-dev: 28 steps at distilled guidance 3.5
    (its model card). Tiny presets: 4 steps, enough to run every part of the sampler.

    `batch`: how many of the assessment's samples one pipeline call draws. One call per image costs
    the pipeline's fixed overhead each time, most of a tiny model's render; on a real model the GPU
    is better used with a few at once, but memory bounds it. SD1.5 at 512 px is set to 4 (a few GB
    of activations by estimate, not measured on a GPU yet); SDXL and FLUX.1-dev at 1024 px stay at 1
    until bench/gpu.py has measured them."""

    steps: int
    guidance: float
    negative_prompt: str = ""
    batch: int = 1


@dataclass(frozen=True)
class FamilySpec:
    """What the API knows of a model family; the worker's `worker.training.families` module does the rest."""

    name: str
    label: str
    pipeline_class: str  # diffusers' `_class_name` in model_index.json
    defaults: Defaults
    sampling: Sampling = field(default_factory=lambda: Sampling(30, 7.0, NEGATIVE))
    # Tokenizer subfolders whose token counts bound the trigger word (the longest counts).
    tokenizers: tuple[str, ...] = ("tokenizer",)
    # Words in a Hub id that suggest the family, until the worker reads model_index.json.
    name_hints: tuple[str, ...] = ()


NEGATIVE = "blurry, lowres, deformed, disfigured, watermark, text"
FAMILIES: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec) -> FamilySpec:
    """Make a family known by name; the worker needs its `Family` class registered too."""
    FAMILIES[spec.name] = spec
    return spec


register_family(
    FamilySpec(
        SD15,
        "SD1.5",
        "StableDiffusionPipeline",
        Defaults(1200, 1e-4, 16, 512),
        sampling=Sampling(30, 7.0, NEGATIVE, batch=4),
    )
)
register_family(
    FamilySpec(
        SDXL,
        "SDXL",
        "StableDiffusionXLPipeline",
        Defaults(1000, 1e-4, 16, 1024, gradient_checkpointing=True),
        name_hints=("xl",),
    )
)
register_family(
    FamilySpec(
        FLUX,
        "FLUX",
        "FluxPipeline",
        Defaults(1000, 4e-4, 16, 1024, multires=(0.5, 0.75, 1.0), gradient_checkpointing=True),
        sampling=Sampling(28, 3.5),  # guidance-distilled: no negative prompt, no CFG pass
        tokenizers=("tokenizer", "tokenizer_2"),
        name_hints=("flux",),
    )
)

TINY_DEFAULTS = Defaults(steps=20, learning_rate=1e-3, rank=4, resolution=64)
TINY_SAMPLING = Sampling(4, 3.0, NEGATIVE, batch=8)


def sampling_for(family: str, *, tiny: bool) -> Sampling:
    return TINY_SAMPLING if tiny else FAMILIES[family].sampling


# Ranges a request may ask for; outside them a run is wasted or cannot fit any GPU.
LIMITS = {
    "steps": (1, 20_000),
    "learning_rate": (1e-6, 1e-2),
    "rank": (1, 256),
    "resolution": (64, 2048),
}


@dataclass(frozen=True)
class BaseModel:
    """What `base_model` in a request resolves to."""

    name: str  # as the user gave it
    family: str
    source: str  # Hub id, local folder, or a tiny preset name
    tiny: bool = False
    defaults: Defaults = field(default=TINY_DEFAULTS)


PRESETS: dict[str, tuple[str, str]] = {
    "sd15": (SD15, "stable-diffusion-v1-5/stable-diffusion-v1-5"),
    "sdxl": (SDXL, "stabilityai/stable-diffusion-xl-base-1.0"),
    "flux-dev": (FLUX, "black-forest-labs/FLUX.1-dev"),
    "tiny-sd15": (SD15, "tiny-sd15"),
    "tiny-sdxl": (SDXL, "tiny-sdxl"),
    "tiny-flux": (FLUX, "tiny-flux"),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")

TINY_NOTE = (
    "This is a tiny test model with random weights: the training runs end to end, but its images are noise. "
    "Use sd15, sdxl or flux-dev on a GPU for a real model."
)


class UnknownBaseModel(ValueError):
    """The name is neither a preset, a Hub id, nor a diffusers folder of a supported family."""


def gpu_present() -> bool:
    """Whether this machine shows an NVIDIA GPU, read from the driver without importing torch."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def default_base_model(configured: str) -> str:
    """`LOOKALIKE_DEFAULT_BASE_MODEL`, where `auto` means sdxl with a GPU and tiny-sd15 without."""
    if configured != "auto":
        return configured
    return "sdxl" if gpu_present() else "tiny-sd15"


def resolve(name: str) -> BaseModel:
    """The family and source of `name`; raises UnknownBaseModel with a reason."""
    name = name.strip()
    if name in PRESETS:
        family, source = PRESETS[name]
        tiny = name in TINY_PRESETS
        return BaseModel(name, family, source, tiny, TINY_DEFAULTS if tiny else FAMILIES[family].defaults)
    path = Path(name).expanduser()
    if name.startswith(("/", "./", "~")) or path.is_dir():
        index = path / "model_index.json"
        try:
            class_name = json.loads(index.read_text()).get("_class_name", "")
        except (OSError, ValueError) as exc:
            raise UnknownBaseModel(f"{name} is not a diffusers model folder (no readable model_index.json)") from exc
        spec = next((f for f in FAMILIES.values() if f.pipeline_class == class_name), None)
        if spec is None:
            supported = ", ".join(f.label for f in FAMILIES.values())
            raise UnknownBaseModel(f"{name} is a {class_name or 'unknown'} model; supported: {supported}")
        tiny = (path / "lookalike_preset.json").exists()
        return BaseModel(name, spec.name, str(path.resolve()), tiny, TINY_DEFAULTS if tiny else spec.defaults)
    if _HUB_ID.match(name):
        family = family_from_name(name)
        return BaseModel(name, family, name, False, FAMILIES[family].defaults)
    raise UnknownBaseModel(f"{name!r} is not a preset ({', '.join(PRESETS)}), a Hub id (owner/name) or a folder")


def family_from_name(name: str) -> str:
    """A Hub id's likely family; the worker confirms it from the downloaded model_index.json."""
    lowered = name.lower()
    hinted = [f for f in FAMILIES.values() if any(h in lowered for h in f.name_hints)]
    # The longest hint wins ("flux" over "xl" in "flux-xl-thing"); no hint means SD1.5.
    hinted.sort(key=lambda f: -max(len(h) for h in f.name_hints if h in lowered))
    return hinted[0].name if hinted else SD15
