"""The `assessing` stage: sample every kept checkpoint, score the samples, choose the weights to export.

It runs inside the training pipeline (`worker.training.pipeline.run_pipeline`) on the model the
trainer leaves loaded, with the prompts' text conditioning encoded before the text encoders were
freed, so it loads nothing. A worker that dies here holds the training's lease like one that dies
while training, so the training's stuck-work rule (`worker.training.recovery`) covers this stage.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from app.trainings.catalog import Sampling
from worker.assessment.prompts import BLEED, PromptSpec
from worker.assessment.scorer import (
    BLEEDS_AT,
    CheckpointScore,
    References,
    SampleScore,
    advice,
    choose,
    overall_score,
    score_image,
    similarity,
    verdict_for,
)
from worker.assessment.sheet import Cell, Row, contact_sheet
from worker.sampling import SampleRequest, render_all, use_lora
from worker.training.trainer import TrainResult

log = logging.getLogger(__name__)


@dataclass
class AssessedSample:
    step: int
    prompt: PromptSpec
    image: bytes  # JPEG
    score: SampleScore

    def record(self, key: str) -> dict[str, Any]:
        """What the model row keeps of it (the image's storage key, not the image)."""
        s = self.score
        return {
            "key": key,
            "step": self.step,
            "label": self.prompt.label,
            "prompt": self.prompt.text,
            "kind": self.prompt.kind,
            "seed": self.prompt.seed,
            "faces": s.faces,
            "identity_similarity": s.similarity,
            "identity_distance": s.identity_distance,
            "memorized": s.memorized,
            "pose": s.pose,
        }


@dataclass
class Assessment:
    quality: dict[str, Any]
    chosen_step: int
    samples: list[AssessedSample]
    sheet: bytes  # JPEG
    timings: dict[str, float] = field(default_factory=dict)


def assess(
    result: TrainResult,
    prompts: Sequence[PromptSpec],
    refs: References,
    *,
    sampling: Sampling,
    resolution: int,
    tiny: bool,
    trigger: str,
    held_out: int,
    tick: Callable[[], None] = lambda: None,
) -> Assessment:
    """Sample and score each snapshot in `result`; `tick` runs before each pipeline call (it may raise to stop)."""
    family = result.model
    if family is None or not result.snapshots:
        raise ValueError("assess needs the trainer's loaded model and its snapshots (keep_model, keep_at)")
    negative = result.prompt_conds.get(sampling.negative_prompt) if sampling.negative_prompt else None
    requests = [SampleRequest(p.text, p.seed, resolution, resolution) for p in prompts]
    sampling_s = scoring_s = 0.0
    scored: list[CheckpointScore] = []
    samples: list[AssessedSample] = []
    for step in sorted(result.snapshots):
        use_lora(family, result.snapshots[step])
        t0 = time.perf_counter()
        images = render_all(family, requests, result.prompt_conds, sampling, negative=negative, before=tick)
        t1 = time.perf_counter()
        row = [
            AssessedSample(step, p, _jpeg(image), score_image(image, refs))
            for p, image in zip(prompts, images, strict=True)
        ]
        scoring_s += time.perf_counter() - t1
        sampling_s += t1 - t0
        samples += row
        scored.append(
            CheckpointScore(
                step,
                subject=[s.score for s in row if s.prompt.kind != BLEED],
                others=[s.score for s in row if s.prompt.kind == BLEED],
            )
        )
    chosen = choose(scored)
    score = overall_score(chosen)
    quality = {
        "score": score,
        "verdict": verdict_for(score),
        "identity_similarity": chosen.identity_similarity,
        "face_detection_rate": chosen.face_detection_rate,
        "memorization": chosen.memorization,
        "identity_bleed": chosen.identity_bleed,
        "diversity": chosen.diversity,
        "chosen_step": chosen.step,
        "advice": advice(scored, chosen, score, tiny=tiny, trigger=trigger),
        "held_out_photos": held_out,
        "reference": "held_out" if refs.held_out else ("identity" if refs.identity is not None else None),
        "checkpoints": [c.summary() for c in scored],
    }
    t0 = time.perf_counter()
    sheet = _sheet(prompts, scored, samples, chosen.step)
    timings = {
        "sampling": round(sampling_s, 3),
        "scoring": round(scoring_s, 3),
        "sheet": round(time.perf_counter() - t0, 3),
    }
    log.info("assessment: %s at step %s (%s)", quality["verdict"], chosen.step, timings)
    return Assessment(quality, chosen.step, samples, sheet, timings)


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=92)
    return out.getvalue()


def _caption(sample: AssessedSample) -> tuple[str, bool]:
    s = sample.score
    if s.similarity is None and s.identity_distance is None:
        return ("no face", False)
    if sample.prompt.kind == BLEED:
        bleed = similarity(s.identity_distance) if s.identity_distance is not None else 0.0
        return (f"like subject {bleed:.0f}", bleed >= BLEEDS_AT)
    if s.memorized:
        return (f"copy of {s.copy_of}", True)
    return (f"likeness {s.similarity:.0f}", False)


def _sheet(
    prompts: Sequence[PromptSpec], scored: list[CheckpointScore], samples: list[AssessedSample], chosen: int
) -> bytes:
    rows = []
    for checkpoint in scored:
        cells = []
        for sample in (s for s in samples if s.step == checkpoint.step):
            caption, flagged = _caption(sample)
            cells.append(Cell(Image.open(io.BytesIO(sample.image)), caption, flagged))
        likeness = checkpoint.identity_similarity
        note = f"likeness {likeness:.0f}" if likeness is not None else "no faces"
        if checkpoint.memorizes:
            note += "\ncopies photos"
        if checkpoint.bleeds:
            note += "\nbleeds"
        if checkpoint.step == chosen:
            note += "\nkept"
        rows.append(Row(f"step {checkpoint.step}", note, cells, chosen=checkpoint.step == chosen))
    return contact_sheet([p.label for p in prompts], rows)
