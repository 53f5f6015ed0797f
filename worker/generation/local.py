"""`lookalike generate`: images from LoRA files on this machine, with the service's request rules and engine.

No server, database or queue: the LoRAs are read from disk, the request is resolved by
`app.generations.params` as the API resolves it, the images come from `engine.Engine` as on the
GPU worker, and each lands in the output folder as soon as it is made.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from app.core.errors import Unprocessable
from app.core.settings import Settings
from app.generations import params
from app.generations.lorafile import LoraFileError, family_of, read_header
from app.generations.policy import check_prompts
from app.trainings import catalog
from worker.generation.adapters import FIT_HINT, family_label
from worker.generation.engine import Engine, ImageJob, LoraSource, encode_output
from worker.generation.errors import GenerationError
from worker.generation.sheet import COLUMNS_ARE, grid_sheet, scale_label

SHEET_NAME = "contact_sheet.jpg"
CLASS_WORD = "person"  # the files do not record the class word; "person" fits any subject
# The base model a LoRA's family runs on when its file names no base model of its own.
FAMILY_PRESETS = {family: name for name, (family, _) in catalog.PRESETS.items() if name not in catalog.TINY_PRESETS}


@dataclass(frozen=True)
class LoraFile:
    path: Path
    data: bytes
    metadata: dict[str, str]
    keys: list[str]

    @classmethod
    def read(cls, path: Path) -> LoraFile:
        data = path.read_bytes()
        try:
            metadata, keys = read_header(data)
        except LoraFileError as exc:
            raise GenerationError(
                "lora_unreadable", f"{path} cannot be read: {exc}", "Pass a LoRA .safetensors file."
            ) from exc
        return cls(path, data, metadata, keys)


def generate_files(
    loras: Sequence[tuple[Path, float]],
    *,
    prompt: str,
    out: Path,
    settings: Settings,
    base_model: str | None = None,
    negative_prompt: str | None = None,
    num_outputs: int = 1,
    seed: int | None = None,
    width: int | None = None,
    height: int | None = None,
    aspect_ratio: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    image: Path | None = None,
    prompt_strength: float = params.DEFAULT_PROMPT_STRENGTH,
    output_format: str = "png",
    output_quality: int = 90,
    sweep: bool = False,
    engine: Engine | None = None,
    note: Callable[[str], None] = lambda _line: None,
    written: Callable[[Path], None] = lambda _path: None,
) -> list[Path]:
    """Generate and write the images (and, for `sweep`, the contact sheet); the paths written, in order.

    `loras` are (file, scale); `sweep` runs the first LoRA at every `params.SWEEP_SCALES`. `note`
    hears what was decided for the user (the base model, the seed, an added trigger word).
    """
    if not loras:
        raise GenerationError("no_lora", "No LoRA given.", "Pass at least one --lora FILE.")
    files = [LoraFile.read(path) for path, _ in loras]
    if base_model is None:
        base_model = _default_base(files[0])
        note(f"Base model: {base_model} (from {files[0].path.name})")
    base = catalog.resolve(base_model)
    for file in files:
        seems = family_of(file.metadata, file.keys)
        if seems is not None and seems != base.family:
            raise GenerationError(
                "lora_mismatch",
                f"{file.path.name} is a LoRA for {family_label(seems)}; "
                f"the base model {base_model} is {family_label(base.family)}.",
                FIT_HINT,
            )
    for file in files:
        trigger = file.metadata.get("lookalike.trigger_word")
        if trigger:
            prompt, added = params.with_trigger(prompt, trigger, CLASS_WORD)
            if added:
                note(f"Added the trigger word of {file.path.name}: {prompt}")
    try:
        check_prompts([prompt], settings)  # the service's policy: these models depict real people
    except Unprocessable as exc:
        raise GenerationError(exc.code, exc.message, exc.hint or "") from None
    if seed is None:
        seed = secrets.randbelow(2**32)
        note(f"Seed: {seed}")
    scales_list = [tuple(float(s) for s in row) for row in _scale_rows(loras, sweep)]
    if num_outputs * len(scales_list) > params.MAX_IMAGES:
        raise GenerationError(
            "too_many_images",
            f"{num_outputs} outputs x {len(scales_list)} scales make {num_outputs * len(scales_list)} images.",
            f"Ask for at most {params.MAX_IMAGES} images in all.",
        )
    w, h = params.image_size(base.family, tiny=base.tiny, width=width, height=height, aspect_ratio=aspect_ratio)
    sampler = params.sampler(base.family, tiny=base.tiny, steps=steps, guidance=guidance, negative=negative_prompt)
    init = _start_image(image) if image else None
    seeds = [(seed + i) % 2**32 for i in range(num_outputs)]  # as the API plans them
    jobs = [
        ImageJob(
            prompt, sampler.negative_prompt, s, w, h, sampler.steps, sampler.guidance, scales, init, prompt_strength
        )
        for s in seeds
        for scales in scales_list
    ]
    sources = [
        LoraSource("l" + hashlib.sha256(f.data).hexdigest()[:16], scale, lambda d=f.data: d, f.path.name)
        for f, (_, scale) in zip(files, loras, strict=True)
    ]
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []

    def save(index: int, picture: Image.Image) -> None:
        job = jobs[index]
        name = f"seed{job.seed}-scale{scale_label(job.scales[0])}" if sweep else f"seed{job.seed}"
        path = _free_path(out / f"{name}.{params.EXTENSIONS[output_format]}")
        path.write_bytes(encode_output(picture, output_format, output_quality))
        paths.append(path)
        written(path)

    engine = engine or Engine(models_dir=settings.resolved_models_dir)
    images = engine.generate(base_model, base.family, sources, jobs, each=save)
    if sweep:
        sheet = _free_path(out / SHEET_NAME)
        columns = [scale_label(r[0]) for r in scales_list]
        sheet.write_bytes(grid_sheet(columns, seeds, images, note=COLUMNS_ARE["sweep"]))
        paths.append(sheet)
        written(sheet)
    if base.tiny:
        note("This is a tiny test model with random weights: its images are noise.")
    return paths


def _start_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as opened:
            return ImageOps.exif_transpose(opened).convert("RGB")
    except OSError as exc:  # PIL's UnidentifiedImageError included
        raise GenerationError("bad_image", f"{path} cannot be read as an image.", "Pass a JPEG, PNG or WebP.") from exc


def _default_base(file: LoraFile) -> str:
    """The base model the file names (our own files do), else its family's preset."""
    named = file.metadata.get("lookalike.base_model")
    if named:
        return named
    family = family_of(file.metadata, [])  # what the metadata names, not a guess from the keys
    if family in FAMILY_PRESETS:
        return FAMILY_PRESETS[family]
    raise GenerationError(
        "base_model_required",
        f"{file.path.name} does not say which base model it was trained on.",
        "Pass --base-model (a preset such as sd15, sdxl or flux-dev, a Hub id or a diffusers folder).",
    )


def _scale_rows(loras: Sequence[tuple[Path, float]], sweep: bool) -> list[list[float]]:
    """Each image's scales: the given ones, or the first LoRA at every sweep scale and the others as given."""
    given = [scale for _, scale in loras]
    if not sweep:
        return [given]
    return [[scale, *given[1:]] for scale in params.SWEEP_SCALES]


def _free_path(path: Path) -> Path:
    """`path`, or `name-2.ext`, `name-3.ext`...: an earlier run's images are never overwritten."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate
