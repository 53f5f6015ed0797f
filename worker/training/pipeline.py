"""The training pipeline, written once: prepare → train → assess → export.

`training.run` (photos from the subject's rows, files into the service's storage) and
`lookalike train` (photos from a folder, files into the output folder through the same
`Storage` interface) both call `run_pipeline`. They differ only in where photos come from
(a list of `TrainPhoto`), where files go (a `Storage`, a work folder and an output prefix)
and how progress is reported (a `Reporter`).

The assessment (`worker.assessment`) samples the LoRA weights kept at 40, 60, 80 and 100 % of
the steps, scores them against photos held out of training, and chooses the weights the
files are exported from; the samples and the contact sheet land beside the files.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from app.core.keys import MODEL_FILES, SHEET_FILE, TRAINING_WORK
from app.core.settings import Settings
from app.core.storage import Storage
from app.trainings.captions import training_caption
from app.trainings.catalog import sampling_for
from app.trainings.params import public_params
from worker.analysis.measures import phash
from worker.assessment.prompts import keep_points, prompt_set
from worker.assessment.scorer import References, TrainingRef
from worker.assessment.stage import assess
from worker.training.data import Box, TrainItem, face_in_crop
from worker.training.errors import Canceled, Interrupted, TrainingError
from worker.training.export import diffusers_file, kohya_file, metadata
from worker.training.trainer import Hooks, Progress, TrainConfig, TrainResult, train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainPhoto:
    """One selected photo as either entry point has it; the images are read only when framed."""

    key: str  # stable id for the cache (photo id and hash, or file name and hash)
    caption: str | None  # the user's own, if any
    auto_caption: str | None  # the analysis' template, with a {trigger} slot
    face_box: Sequence[float] | None  # in the stored image's pixels
    crop_box: Sequence[int] | None  # the analysis crop, in the stored image's pixels
    crop: Callable[[], bytes | None]  # the analysis crop's JPEG, None when there is none
    original: Callable[[], bytes]  # the stored (cleaned) image
    encoding: np.ndarray | None = None  # the subject face's 128-d encoding, from the analysis


@dataclass(frozen=True)
class RunSpec:
    """What is trained: the base model, the words, and the resolved `params` (see app.trainings.params)."""

    name: str
    base_model: str
    family: str
    tiny: bool
    trigger_word: str
    class_word: str
    params: dict[str, Any]
    validation_prompts: tuple[str, ...] = ()


@dataclass
class Reporter:
    """How a run is watched: phases, progress (False stops it: canceled), and a shutdown check."""

    phase: Callable[[str], None] = lambda _name: None  # "caching", "training", "assessing"
    progress: Callable[[Progress], bool] = lambda _p: True
    should_stop: Callable[[], bool] = lambda: False
    # Called before each assessment sample; raises Canceled or Interrupted to stop there.
    tick: Callable[[], None] = lambda: None


@dataclass
class Exported:
    files: dict[str, dict[str, Any]]  # format -> {"key": storage key, "size_bytes": n}
    result: TrainResult
    settings: dict[str, Any] = field(default_factory=dict)  # as written into the files' metadata
    quality: dict[str, Any] | None = None  # None: the assessment could not run (the worker's log says why)
    samples: list[dict[str, Any]] = field(default_factory=list)  # AssessedSample.record, with storage keys
    sheet_key: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # the assessment's


def run_pipeline(
    spec: RunSpec,
    photos: Sequence[TrainPhoto],
    *,
    identity: np.ndarray | None,
    storage: Storage,
    work: Storage,
    out: str,
    settings: Settings,
    reporter: Reporter | None = None,
    fix_hint: str = "Add clear photos of the same person, then start again.",
) -> Exported:
    """Run every stage; the LoRA files land at `out` + `MODEL_FILES[format]` in `storage`, the
    samples under `out` + "samples/" and the contact sheet at `out` + `SHEET_FILE`.

    `identity` is the subject's mean face encoding (the subject review's), the likeness reference
    when no photos could be held out.

    `work` holds the cache and checkpoints (a resumed run starts from them); the caller clears
    it with `clear_work` once it has recorded the result.
    """
    reporter = reporter or Reporter()
    trained, held = hold_out(photos, settings)
    items = prepare(spec, trained, settings=settings, fix_hint=fix_hint)
    prompts = prompt_set(spec.trigger_word, spec.class_word, spec.validation_prompts)
    sampling = sampling_for(spec.family, tiny=spec.tiny)
    config = train_config(spec, settings)
    config.keep_at = keep_points(config.steps)
    negative = [sampling.negative_prompt] if sampling.negative_prompt else []  # FLUX has none
    config.extra_prompts = tuple(dict.fromkeys([p.text for p in prompts] + negative))
    config.keep_model = True
    hooks = Hooks(progress=reporter.progress, phase=reporter.phase, store=work, should_stop=reporter.should_stop)
    result = train(items, config, hooks)
    reporter.phase("assessing")
    refs = References(
        identity=identity,
        training=[TrainingRef(p.key, p.encoding, phash(i.image)) for p, i in zip(trained, items, strict=True)],
        held_out=[p.encoding for p in held if p.encoding is not None],
    )
    try:
        assessment = assess(
            result,
            prompts,
            refs,
            sampling=sampling,
            resolution=config.resolution,
            tiny=spec.tiny,
            trigger=spec.trigger_word,
            held_out=len(held),
            tick=reporter.tick,
        )
    except (Canceled, Interrupted):
        raise
    except Exception:  # noqa: BLE001 - the LoRA is trained: deliver it, unassessed, rather than fail the run
        log.exception("the assessment failed; exporting the final weights unassessed")
        assessment = None
    finally:
        result.model = None  # the model's memory goes back before the export
        free_memory()
    if assessment is None:
        return export(spec, result, storage=storage, out=out)
    result.lora = result.snapshots[assessment.chosen_step]
    exported = export(spec, result, storage=storage, out=out)
    exported.quality, exported.timings = assessment.quality, assessment.timings
    for index, sample in enumerate(assessment.samples):
        key = out + f"samples/step-{sample.step:06d}-{index:03d}.jpg"
        storage.put(key, sample.image, content_type="image/jpeg")
        exported.samples.append(sample.record(key))
    exported.sheet_key = out + SHEET_FILE
    storage.put(exported.sheet_key, assessment.sheet, content_type="image/jpeg")
    return exported


def hold_out(photos: Sequence[TrainPhoto], settings: Settings) -> tuple[list[TrainPhoto], list[TrainPhoto]]:
    """Photos kept out of training as the assessment's honest reference, when there are enough.

    `assessment_holdout` photos (spread evenly through the list, among those with a face encoding)
    once there are `assessment_holdout_from` or more, never leaving fewer than the minimum to train on.
    """
    count = settings.assessment_holdout
    encoded = [i for i, p in enumerate(photos) if p.encoding is not None]
    if count == 0 or len(photos) < settings.assessment_holdout_from or len(encoded) < count:
        return list(photos), []
    if len(photos) - count < settings.min_training_photos:
        return list(photos), []
    picked = {encoded[int((k + 0.5) * len(encoded) / count)] for k in range(count)}
    return [p for i, p in enumerate(photos) if i not in picked], [photos[i] for i in sorted(picked)]


def free_memory() -> None:
    """Give the GPU memory of a finished (or stopped) model back for the next job."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def prepare(spec: RunSpec, photos: Sequence[TrainPhoto], *, settings: Settings, fix_hint: str) -> list[TrainItem]:
    """Each photo framed (the analysis crop, the face box moved into it) and captioned with the trigger word."""
    if len(photos) < settings.min_training_photos:
        raise TrainingError(
            "not_enough_photos",
            f"Only {len(photos)} usable photo(s) are selected; training needs at least {settings.min_training_photos}.",
            fix_hint,
        )
    items = []
    for photo in photos:
        image, box = frame(photo)
        caption = training_caption(
            caption=photo.caption,
            auto_caption=photo.auto_caption,
            trigger=spec.trigger_word,
            class_word=spec.class_word,
        )
        items.append(TrainItem(key=photo.key, image=image, caption=caption, face_box=box))
    return items


def frame(photo: TrainPhoto) -> tuple[Image.Image, Box | None]:
    """The analysis crop with the face box moved into it; the original (centre-cropped later) when there is none."""
    face = list(photo.face_box) if photo.face_box else None
    if photo.crop_box:
        data = photo.crop()
        if data is not None:
            image = Image.open(io.BytesIO(data)).convert("RGB")
            return image, face_in_crop(face, list(photo.crop_box), image.width)
    image = Image.open(io.BytesIO(photo.original())).convert("RGB")
    return image, tuple(face) if face else None  # type: ignore[return-value]


def train_config(spec: RunSpec, settings: Settings) -> TrainConfig:
    """The trainer's config from the stored params; a tiny preset is built locally on first use."""
    from worker.training.presets import local_source

    params = spec.params
    source = local_source(params["source"], tiny=spec.tiny, models_dir=settings.resolved_models_dir)
    return TrainConfig(
        family=spec.family,
        source=source,
        steps=int(params["steps"]),
        learning_rate=float(params["learning_rate"]),
        rank=int(params["rank"]),
        resolution=int(params["resolution"]),
        multires=tuple(params["multires"]),
        batch_size=params.get("batch_size"),
        seed=int(params["seed"]),
        face_weight=float(params["face_weight"]),
        gradient_checkpointing=bool(params["gradient_checkpointing"]),
        checkpoint_every=settings.checkpoint_every,
        progress_every_s=settings.training_progress_s,
    )


def export(spec: RunSpec, result: TrainResult, *, storage: Storage, out: str) -> Exported:
    """Both files, with the same metadata, at `out` + their names."""
    file_settings = public_params(spec.params) | {"batch_size": result.batch_size}
    meta = metadata(
        family=spec.family,
        base_model=spec.base_model,
        trigger_word=spec.trigger_word,
        name=spec.name,
        rank=result.rank,
        alpha=result.alpha,
        settings=file_settings,
    )
    blobs = {
        "diffusers": diffusers_file(spec.family, result.lora, meta),
        "kohya": kohya_file(spec.family, result.lora, result.alpha, meta),
    }
    files = {}
    for fmt, blob in blobs.items():
        key = out + MODEL_FILES[fmt]
        storage.put(key, blob, content_type="application/octet-stream")
        files[fmt] = {"key": key, "size_bytes": len(blob)}
    return Exported(files=files, result=result, settings=file_settings)


def clear_work(work: Storage) -> None:
    """The cache and checkpoints were only for resuming this run."""
    for part in TRAINING_WORK:
        work.delete_prefix(part)
