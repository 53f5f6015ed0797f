"""`lookalike train PHOTOS_DIR`: the service's analysis, selection, training and export on a local folder.

No database, queue or object storage: photos are read from the folder (with optional
same-name `.txt` captions), the cache and checkpoints live in `OUTPUT/.work`, and both
`.safetensors` files land in OUTPUT. The upload cleaning, the analysis, the subject review and
the training pipeline (`worker.training.pipeline`) are the service's own, with its settings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.core.settings import Settings
from app.core.storage import LocalStorage
from app.photos.ingest import Candidate, Rejected, prepare_image
from app.photos.reasons import REJECTED
from app.photos.review import PhotoFacts, review
from app.trainings import catalog, trigger
from app.trainings.params import resolve_params
from app.trainings.tokens import token_counter
from worker.analysis.pipeline import Analysis, analyze_image
from worker.libraries import import_libraries
from worker.training.errors import TrainingError

if TYPE_CHECKING:  # the training modules import torch: only once the photos are analysed (see train_folder)
    from worker.training.trainer import Progress, TrainResult

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif"}
WORK_FOLDER = ".work/"  # the cache and checkpoints, inside OUTPUT; removed when the run ends


@dataclass
class LocalPhoto:
    path: Path
    verdict: str
    reasons: list[str]
    selected: bool = False


@dataclass
class LocalRun:
    photos: list[LocalPhoto]
    trigger_word: str
    result: TrainResult
    files: dict[str, Path]
    quality: dict[str, Any] | None  # None: the assessment could not run
    sheet: Path | None


def train_folder(
    photos_dir: Path,
    *,
    output: Path,
    settings: Settings,
    base_model: str,
    name: str | None = None,
    trigger_word: str | None = None,
    class_word: str = "person",
    seed: int = 0,
    validation_prompts: Sequence[str] = (),
    overrides: dict[str, Any] | None = None,
    on_photo: Callable[[LocalPhoto], None] = lambda _p: None,
    on_progress: Callable[[Progress], bool] = lambda _p: True,
    on_phase: Callable[[str], None] = lambda _name: None,
) -> LocalRun:
    """Analyse, select, train and export; raises TrainingError with a hint when it cannot.

    `settings` are the service's (the CLI's flags already applied); `overrides` are the training
    knobs of `app.trainings.params.resolve_params` (steps, rank, learning_rate, ...).
    """
    base = catalog.resolve(base_model)
    files = sorted(p for p in photos_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise TrainingError(
            "no_training_photos", f"No images in {photos_dir}.", "Put JPEG, PNG, WebP or HEIC files there."
        )
    t0 = time.perf_counter()
    with _analysis(files, settings=settings, class_word=class_word) as outcomes:
        # torch, diffusers & co. load meanwhile; the photos are analysed in other processes.
        import_libraries(("diffusers", catalog.FAMILIES[base.family].pipeline_class))
        from worker.training.pipeline import Reporter, RunSpec, TrainPhoto, clear_work, run_pipeline

        t1 = time.perf_counter()
        analysed, selected, identity = _select(files, outcomes(), settings=settings, on_photo=on_photo)
    # They overlap: the imports, and the start until every photo's verdict is in.
    timings = {"libraries": t1 - t0, "analysis": time.perf_counter() - t0}

    word = trigger_word or trigger.generate(
        seed=zlib.crc32(str(photos_dir.resolve()).encode()), taken=set(), count_tokens=token_counter(base)
    )
    spec = RunSpec(
        name=name or output.name or "lora",
        base_model=base.name,
        family=base.family,
        tiny=base.tiny,
        trigger_word=word,
        class_word=class_word,
        params=resolve_params(base, seed=seed, **(overrides or {})),
        validation_prompts=tuple(validation_prompts),
    )
    photos = [
        TrainPhoto(
            key=f"{path.name}:{zlib.crc32(stored):08x}",
            caption=_caption_file(path),
            auto_caption=result.auto_caption,
            face_box=result.face_box,
            crop_box=result.crop_box,
            crop=lambda r=result: r.crop,
            original=lambda d=stored: d,
            encoding=encoding,
        )
        for path, result, stored, encoding in selected
    ]
    folder = LocalStorage(output)
    folder.ensure()
    work = folder.under(WORK_FOLDER)
    exported = run_pipeline(
        spec,
        photos,
        identity=identity,
        storage=folder,
        work=work,
        out="",
        settings=settings,
        reporter=Reporter(progress=on_progress, phase=on_phase),
        fix_hint="Add clear photos of the same person (see the reasons listed), or lower --min-photos.",
    )
    (output / "training.json").write_text(
        json.dumps(
            {"base_model": base.name, "trigger_word": word, "photos": len(photos), **exported.settings}
            | {"quality": exported.quality, "samples": exported.samples}
            | {"timings": timings | exported.result.timings | {"assessment": exported.timings}},
            indent=2,
        )
    )
    clear_work(work)
    shutil.rmtree(output / WORK_FOLDER, ignore_errors=True)
    paths = {fmt: output / info["key"] for fmt, info in exported.files.items()}
    return LocalRun(
        analysed,
        word,
        exported.result,
        paths,
        exported.quality,
        output / exported.sheet_key if exported.sheet_key else None,
    )


def _analyse_one(path: Path, settings: Settings, class_word: str) -> tuple[str, Any]:
    """One file cleaned as an upload is and analysed: ("ok", (analysis, stored bytes)) or (verdict code, reason)."""
    try:
        stored = prepare_image(Candidate(path.name, path.read_bytes()), settings).original
        return "ok", (analyze_image(stored, class_word=class_word, thumb_size=settings.thumb_size), stored)
    except Rejected as exc:
        return "rejected", exc.code
    except (OSError, ValueError) as exc:
        return "rejected", f"unreadable: {exc}"


@contextlib.contextmanager
def _analysis(
    files: list[Path], *, settings: Settings, class_word: str
) -> Iterator[Callable[[], list[tuple[str, Any]]]]:
    """Start analysing `files`; the function it yields waits for the outcomes, in order.

    In a fresh command, before torch is imported, the photos are analysed in forked processes
    (one per 8 photos, as many as there are cores) while this one imports the libraries: each
    side takes seconds, and they no longer add up. Where torch is loaded already (a test run, a
    worker) there is nothing to overlap, and nothing is forked from a process that holds it.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if "torch" in sys.modules or sys.platform != "linux":
        yield lambda: [_analyse_one(path, settings, class_word) for path in files]
        return
    processes = max(1, min(cores, len(files) // 8))
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_analyse_one, path, settings, class_word) for path in files]
        yield lambda: [future.result() for future in futures]


def _select(
    files: list[Path], outcomes: list[tuple[str, Any]], *, settings: Settings, on_photo: Callable[[LocalPhoto], None]
) -> tuple[list[LocalPhoto], list[tuple[Path, Analysis, bytes, np.ndarray | None]], np.ndarray | None]:
    """The analysed photos judged together as the subject review does; the rest rejected with their reason."""
    analysed, facts, found = [], [], {}
    for path, (status, detail) in zip(files, outcomes, strict=True):
        if status != "ok":
            analysed.append(LocalPhoto(path, REJECTED, [detail]))
            on_photo(analysed[-1])
            continue
        result, stored = detail
        pid = uuid.uuid4()
        facts.append(
            PhotoFacts(
                id=pid,
                reasons=result.reasons,
                encodings=result.encodings,
                quality=result.quality or 0.0,
                pose=result.pose,
                shot=result.shot,
                brightness=result.brightness,
                phash=result.phash,
                signature=result.signature,
            )
        )
        found[pid] = (path, result, stored)
    verdicts = review(
        facts,
        threshold=settings.identity_threshold,
        limit=settings.max_training_photos,
        names={f.id: found[f.id][0].name for f in facts},
    )
    selected = []
    for fact in facts:
        outcome = verdicts.outcomes[fact.id]
        path = found[fact.id][0]
        photo = LocalPhoto(path, outcome.verdict, [r["code"] for r in outcome.reasons], outcome.selected)
        analysed.append(photo)
        on_photo(photo)
        if outcome.selected:
            index = outcome.encoding_index
            encodings = fact.encodings
            encoding = encodings[index] if encodings is not None and index is not None else None
            selected.append((*found[fact.id], encoding))
    return analysed, selected, verdicts.identity


def _caption_file(path: Path) -> str | None:
    caption_file = path.with_suffix(".txt")
    return (caption_file.read_text().strip() or None) if caption_file.is_file() else None
