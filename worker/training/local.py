"""`lookalike train PHOTOS_DIR`: the service's analysis, selection, training and export on a local folder.

No database, queue or object storage: photos are read from the folder (with optional
same-name `.txt` captions), the cache and checkpoints live in `OUTPUT/.work`, and both
`.safetensors` files land in OUTPUT. The same functions as the server run underneath.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from app.core.settings import Settings
from app.photos.ingest import Candidate, Rejected, prepare_image
from app.photos.reasons import REJECTED
from app.photos.review import PhotoFacts, review
from app.photos.service import training_caption
from app.trainings import catalog, trigger
from worker.analysis.pipeline import analyze_image
from worker.training.data import TrainItem, face_in_crop
from worker.training.errors import TrainingError
from worker.training.export import diffusers_file, kohya_file, metadata
from worker.training.trainer import Hooks, Progress, TrainConfig, TrainResult, train

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif"}


class FolderStore:
    """The trainer's BlobStore in a folder (writes go through a temp file and a rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, name: str) -> bytes | None:
        path = self.root / name
        return path.read_bytes() if path.is_file() else None

    def put(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def list(self, prefix: str) -> list[str]:
        folder = self.root / prefix
        if not folder.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in folder.iterdir() if not p.name.startswith("."))

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)


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


def train_folder(
    photos_dir: Path,
    *,
    output: Path,
    base_model: str,
    steps: int | None = None,
    trigger_word: str | None = None,
    class_word: str = "person",
    rank: int | None = None,
    learning_rate: float | None = None,
    resolution: int | None = None,
    seed: int = 0,
    face_weight: float = 3.0,
    batch_size: int | None = None,
    min_photos: int = 10,
    max_photos: int = 30,
    models_dir: Path,
    on_photo: Callable[[LocalPhoto], None] = lambda _p: None,
    on_progress: Callable[[Progress], bool] = lambda _p: True,
) -> LocalRun:
    """Analyse, select, train and export; raises TrainingError with a hint when it cannot."""
    base = catalog.resolve(base_model)
    files = sorted(p for p in photos_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise TrainingError(
            "no_training_photos", f"No images in {photos_dir}.", "Put JPEG, PNG, WebP or HEIC files there."
        )

    analysed, facts, crops = [], [], {}
    ingest_settings = Settings()
    for path in files:
        try:
            # The same cleaning as an upload: upright, sRGB, size limits.
            stored = prepare_image(Candidate(path.name, path.read_bytes()), ingest_settings).original
            result = analyze_image(stored, class_word=class_word)
        except Rejected as exc:
            photo = LocalPhoto(path, REJECTED, [exc.code])
            analysed.append(photo)
            on_photo(photo)
            continue
        except (OSError, ValueError) as exc:
            photo = LocalPhoto(path, REJECTED, [f"unreadable: {exc}"])
            analysed.append(photo)
            on_photo(photo)
            continue
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
        crops[pid] = (path, result, stored)
    verdicts = review(facts, threshold=0.6, limit=max_photos, names={f.id: crops[f.id][0].name for f in facts})
    items: list[tuple[Path, object, bytes]] = []
    for fact in facts:
        outcome = verdicts.outcomes[fact.id]
        path, result, data = crops[fact.id]
        photo = LocalPhoto(path, outcome.verdict, [r["code"] for r in outcome.reasons], outcome.selected)
        analysed.append(photo)
        on_photo(photo)
        if outcome.selected:
            items.append((path, result, data))
    if len(items) < min_photos:
        raise TrainingError(
            "not_enough_photos",
            f"{len(items)} usable photo(s) of one person; at least {min_photos} are needed.",
            "Add clear photos of the same person (see the reasons listed), or lower --min-photos.",
        )

    word = trigger_word or trigger.generate(seed=zlib.crc32(str(photos_dir.resolve()).encode()), taken=set())
    train_items = []
    for path, result, data in items:
        caption_file = path.with_suffix(".txt")
        caption = caption_file.read_text().strip() if caption_file.is_file() else None
        image, box = _crop(result, data)
        text = training_caption(caption=caption, auto_caption=result.auto_caption, trigger=word, class_word=class_word)
        train_items.append(
            TrainItem(key=f"{path.name}:{zlib.crc32(data):08x}", image=image, caption=text, face_box=box)
        )

    source = base.source
    if base.tiny and not source.startswith("/"):
        from worker.training.presets import ensure_tiny

        source = str(ensure_tiny(source, models_dir))
    d = base.defaults
    config = TrainConfig(
        family=base.family,
        source=source,
        steps=steps or d.steps,
        learning_rate=learning_rate or d.learning_rate,
        rank=rank or d.rank,
        resolution=resolution or d.resolution,
        multires=d.multires,
        batch_size=batch_size,
        seed=seed,
        face_weight=face_weight,
        gradient_checkpointing=d.gradient_checkpointing,
        checkpoint_every=max(50, (steps or d.steps) // 10),
    )
    output.mkdir(parents=True, exist_ok=True)
    store = FolderStore(output / ".work")
    result = train(train_items, config, Hooks(progress=on_progress, store=store))
    settings = {
        "steps": config.steps,
        "learning_rate": config.learning_rate,
        "rank": config.rank,
        "resolution": config.resolution,
        "seed": config.seed,
        "face_weight": config.face_weight,
        "batch_size": result.batch_size,
        "photos": len(train_items),
    }
    meta = metadata(
        family=base.family,
        base_model=base.name,
        trigger_word=word,
        name=output.name or "lora",
        rank=result.rank,
        alpha=result.alpha,
        settings=settings,
    )
    paths = {"diffusers": output / "lora.safetensors", "kohya": output / "lora_kohya.safetensors"}
    FolderStore(output).put("lora.safetensors", diffusers_file(base.family, result.lora, meta))
    FolderStore(output).put("lora_kohya.safetensors", kohya_file(base.family, result.lora, result.alpha, meta))
    (output / "training.json").write_text(
        json.dumps({"base_model": base.name, "trigger_word": word, **settings, "timings": result.timings}, indent=2)
    )
    shutil.rmtree(output / ".work", ignore_errors=True)  # cache and checkpoints were only for resuming
    return LocalRun(analysed, word, result, paths)


def _crop(result, data: bytes) -> tuple[Image.Image, tuple[float, float, float, float] | None]:  # noqa: ANN001
    """The analysis crop with the face box moved into it (the original when there is none)."""
    if result.crop is not None and result.crop_box:
        image = Image.open(io.BytesIO(result.crop)).convert("RGB")
        return image, face_in_crop(result.face_box, result.crop_box, image.width)
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return image, tuple(result.face_box) if result.face_box else None  # type: ignore[return-value]
