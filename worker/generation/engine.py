"""The GPU worker's generation engine: base models kept loaded between jobs, LoRAs swapped on them.

Loading a base costs seconds to a minute; switching LoRAs on a loaded base costs milliseconds. So
the engine keeps the last bases used (at most `max_bases`, within a memory budget), loads each
LoRA once per base as a named adapter (`adapters.Adapters`), and per image only chooses the
active adapters and their scales. Every image goes through `Family.render`, the same sampling the
quality assessment uses, so a seed means the same image in both.
"""

from __future__ import annotations

import gc
import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from app.core.settings import Settings
from app.generations.params import snap
from app.trainings import catalog
from worker.generation.adapters import Adapters, LoraSource, family_label
from worker.generation.errors import GenerationError
from worker.training.families import Family, ModelLoadError, family_class
from worker.training.families.base import Cond
from worker.training.presets import local_source
from worker.training.trainer import pick_dtype

log = logging.getLogger(__name__)

CUDA_BUDGET = 0.85  # of the card's memory for loaded bases: the rest is activations and the allocator's slack

__all__ = ["Engine", "GenerationError", "ImageJob", "LoraSource", "Timings", "encode_output", "get_engine"]


@dataclass(frozen=True)
class ImageJob:
    """One image: `scales` holds one scale per LoRA source, in order (a sweep is jobs that differ in scales)."""

    prompt: str
    negative_prompt: str | None
    seed: int
    width: int
    height: int
    steps: int
    guidance: float
    scales: tuple[float, ...]
    image: Image.Image | None = None  # image-to-image from this
    strength: float = 0.8


@dataclass
class Timings:
    """What the last `generate` call spent: the benchmarks and the task record it."""

    load_s: float = 0.0  # loading the base; 0 when it was already loaded
    swap_s: float = 0.0  # loading adapters and choosing the active ones
    render_s: list[float] = field(default_factory=list)  # per image, prompt encoding included


@dataclass
class _Base:
    family: Family
    adapters: Adapters
    nbytes: int


class Engine:
    """Loaded bases (least recently used first) and their adapters; one per worker process (`get_engine`)."""

    def __init__(
        self,
        *,
        models_dir: Path,
        device: str | None = None,
        max_bases: int = 2,
        budget_bytes: int | None = None,
        max_adapters: int = 8,
    ) -> None:
        self.models_dir = Path(models_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = pick_dtype(self.device)
        if budget_bytes is None and self.device.type == "cuda":
            budget_bytes = int(CUDA_BUDGET * torch.cuda.get_device_properties(self.device).total_memory)
        self.max_bases, self.budget_bytes, self.max_adapters = max(1, max_bases), budget_bytes, max_adapters
        self.bases: OrderedDict[tuple[str, str], _Base] = OrderedDict()
        self.last = Timings()
        self._lock = threading.Lock()  # one generation at a time: adapters are switched per image

    # --- bases -----------------------------------------------------------------------------------

    def base(self, base_model: str, family: str) -> Family:
        """The loaded base (loading it, and evicting others, if needed)."""
        return self._base(base_model, family)[0].family

    def _base(self, base_model: str, family: str) -> tuple[_Base, bool]:
        """The base's entry and whether it was loaded by this call."""
        key = (family, self._source(base_model, family))
        entry = self.bases.get(key)
        if entry is not None:
            self.bases.move_to_end(key)
            return entry, False
        while len(self.bases) >= self.max_bases:
            self._evict()
        cls = family_class(family)
        try:
            try:
                loaded = cls.load(key[1], device=self.device, dtype=self.dtype)
            except torch.cuda.OutOfMemoryError:
                log.warning("out of memory loading %s; unloading every other base and trying again", base_model)
                while self.bases:
                    self._evict()
                _free()
                loaded = cls.load(key[1], device=self.device, dtype=self.dtype)
        except ModelLoadError as exc:
            raise GenerationError(
                "base_model_unavailable", f"The base model {base_model} could not be loaded: {exc.reason}.", exc.hint
            ) from exc
        except torch.cuda.OutOfMemoryError as exc:
            _free()
            raise GenerationError(
                "out_of_gpu_memory",
                f"The base model {base_model} does not fit in this GPU's memory.",
                "Use a smaller base model, or a worker with a larger GPU.",
            ) from exc
        entry = _Base(loaded, Adapters(loaded, base_model, limit=self.max_adapters), _nbytes(loaded))
        self.bases[key] = entry
        if self.budget_bytes is not None:
            while len(self.bases) > 1 and sum(b.nbytes for b in self.bases.values()) > self.budget_bytes:
                self._evict()
        return entry, True

    def _source(self, base_model: str, family: str) -> str:
        """Where the base's weights are: a Hub id or a folder (a tiny preset is built on first use)."""
        try:
            base = catalog.resolve(base_model)
        except catalog.UnknownBaseModel as exc:
            raise GenerationError(
                "unknown_base_model", str(exc), "Use a preset (sd15, sdxl, flux-dev), a Hub id or a diffusers folder."
            ) from exc
        # A Hub id's family is only a guess from its name until it loads; presets and folders are sure.
        sure = base.tiny or base_model.strip() in catalog.PRESETS or Path(base.source).is_dir()
        if sure and base.family != family:
            raise GenerationError(
                "base_model_mismatch",
                f"The base model {base_model} is {family_label(base.family)}, not {family_label(family)}.",
                f"Use a {family_label(family)} base model.",
            )
        return local_source(base.source, tiny=base.tiny, models_dir=self.models_dir)

    def _evict(self) -> None:
        """Unload the least recently used base and give its memory back."""
        key, entry = self.bases.popitem(last=False)
        log.info("unloading base %s (%.1f GiB)", key[1], entry.nbytes / 2**30)
        del entry
        _free()

    # --- images ----------------------------------------------------------------------------------

    def generate(
        self,
        base_model: str,
        family: str,
        loras: Sequence[LoraSource],
        jobs: Sequence[ImageJob],
        *,
        each: Callable[[int, Image.Image], None] | None = None,
        tick: Callable[[], None] | None = None,
    ) -> list[Image.Image]:
        """One image per job, in order; `tick` runs before each (it may raise to stop), `each` sees each image."""
        with self._lock:
            self.last = timings = Timings()
            started = time.perf_counter()
            entry, loaded = self._base(base_model, family)
            timings.load_s = time.perf_counter() - started if loaded else 0.0
            started = time.perf_counter()
            entry.adapters.ensure(loras)
            timings.swap_s = time.perf_counter() - started
            conds: dict[tuple[str, tuple[tuple[str, float], ...]], Cond] = {}
            images = []
            for index, job in enumerate(jobs):
                if tick is not None:
                    tick()
                started = time.perf_counter()
                entry.adapters.activate([s.name for s in loras], _scales(loras, job))
                timings.swap_s += time.perf_counter() - started
                started = time.perf_counter()
                image = self._render(entry, job, conds)
                timings.render_s.append(time.perf_counter() - started)
                if each is not None:
                    each(index, image)
                images.append(image)
            return images

    def _render(self, entry: _Base, job: ImageJob, conds: dict) -> Image.Image:
        family = entry.family
        if job.image is not None and job.steps * job.strength < 1:
            raise GenerationError(
                "too_few_steps",
                f"{job.steps} steps at prompt strength {job.strength} leave no denoising step to run.",
                "Raise the steps or the prompt strength.",
            )
        # Encoded after the adapters are chosen (a kohya LoRA may change the text encoder); reused
        # within the call while the adapters on the text encoders and their scales stay the same.
        text = entry.adapters.text_state()
        cond = _encoded(family, job.prompt, text, conds)
        # No negative prompt still means classifier-free guidance against "" (diffusers' default).
        negative = _encoded(family, job.negative_prompt or "", text, conds)
        if not job.negative_prompt and getattr(family.pipe.config, "force_zeros_for_empty_prompt", False):
            negative = {k: torch.zeros_like(v) for k, v in negative.items()}  # SDXL's own choice for ""
        width, height = snap(job.width, family.multiple), snap(job.height, family.multiple)
        try:
            return family.render(
                cond,
                negative,
                seed=job.seed,
                width=width,
                height=height,
                steps=job.steps,
                guidance=job.guidance,
                image=job.image,
                strength=job.strength,
            )
        except torch.cuda.OutOfMemoryError as exc:
            _free()  # the activations go; the base stays loaded for the next request
            raise GenerationError(
                "out_of_gpu_memory",
                f"The GPU ran out of memory rendering a {width}x{height} image.",
                "Ask for a smaller image, or use fewer LoRAs at once.",
            ) from exc


def _scales(loras: Sequence[LoraSource], job: ImageJob) -> list[float]:
    if not job.scales:
        return [s.scale for s in loras]
    if len(job.scales) != len(loras):
        raise ValueError(f"{len(job.scales)} scales for {len(loras)} LoRAs")
    return list(job.scales)


def _encoded(family: Family, prompt: str, text: tuple, conds: dict) -> Cond:
    key = (prompt, text)
    if key not in conds:
        conds[key] = family.encode_prompts([prompt])[0]
    return conds[key]


def _free() -> None:
    """Give unreferenced GPU memory back to the card (a dropped base, a failed allocation's leftovers)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _nbytes(family: Family) -> int:
    """The parameter and buffer bytes of every module of the pipeline (shared modules counted once)."""
    seen: set[int] = set()
    total = 0
    for module in family.pipe.components.values():
        if not isinstance(module, torch.nn.Module):
            continue
        for tensor in (*module.parameters(), *module.buffers()):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


_ENGINE: Engine | None = None
_ENGINE_LOCK = threading.Lock()


def get_engine(settings: Settings) -> Engine:
    """The process's engine (the Celery worker keeps bases loaded between jobs), built on first use."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            gib = settings.generation_budget_gib
            _ENGINE = Engine(
                models_dir=settings.resolved_models_dir,
                max_bases=settings.generation_max_bases,
                budget_bytes=int(gib * 2**30) if gib else None,
            )
        return _ENGINE


def encode_output(image: Image.Image, fmt: str, quality: int) -> bytes:
    """The image as png, jpg or webp bytes, with no metadata; quality is for jpg and webp."""
    out = io.BytesIO()
    image = image.convert("RGB")
    if fmt == "png":
        image.save(out, "PNG", optimize=False, compress_level=4)  # optimize: seconds per image for a few %
    elif fmt == "jpg":
        image.save(out, "JPEG", quality=quality)
    elif fmt == "webp":
        image.save(out, "WEBP", quality=quality)
    else:
        raise ValueError(f"unknown output format {fmt!r}: png, jpg or webp")
    return out.getvalue()
