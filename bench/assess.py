"""The assessment stage's cost on the CPU with the tiny presets, split into sampling and scoring.

`lookalike train`'s own code path (`worker.training.local.train_folder`) on three fixture photos:
the training steps are the baseline the assessment is compared with, in the same run. Each
kept checkpoint (40/60/80/100 % of the steps) is sampled with the full prompt set (4 subject
prompts + 2 without the trigger word) at the preset's inference settings, and every sample is
scored with dlib. Tiny samples have no face, so scoring here is detection only: on a real model
each face adds its landmarks and encoding (see bench/scorer.py for the per-image cost).

Usage: .venv/bin/python bench/assess.py [--steps 20] [--presets tiny-sd15,tiny-sdxl,tiny-flux]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT / "tests" / "fixtures"
PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg")


def run(preset: str, steps: int, work: Path) -> dict[str, float]:
    from app.core.settings import Settings
    from worker.training.local import train_folder

    photos = work / "photos"
    if not photos.exists():
        photos.mkdir(parents=True)
        for name in PHOTOS:
            shutil.copy(FIXTURES / name, photos / name)
    out = work / f"out-{preset}"
    shutil.rmtree(out, ignore_errors=True)
    settings = Settings(data_dir=work / "data", min_training_photos=1, broker_url=None)
    started = time.perf_counter()
    result = train_folder(photos, output=out, settings=settings, base_model=preset, overrides={"steps": steps})
    total = time.perf_counter() - started
    import json

    timings = json.loads((out / "training.json").read_text())["timings"]
    samples = len(json.loads((out / "training.json").read_text())["samples"])
    return {
        "steps_s": timings["train"],
        "sampling_s": timings["assessment"]["sampling"],
        "scoring_s": timings["assessment"]["scoring"],
        "samples": samples,
        "verdict": result.quality["verdict"],
        "total_s": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--presets", default="tiny-sd15,tiny-sdxl,tiny-flux")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = []
        for preset in args.presets.split(","):
            run(preset, 2, work)  # builds the preset and warms the imports: not measured
            rows.append((preset, run(preset, args.steps, work)))
    print(f"Assessment on the CPU, {args.steps} training steps, 3 photos (baseline: the training steps, same run)\n")
    print("| preset | training steps s | samples | sampling s | scoring s | assessment / steps | verdict |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for preset, r in rows:
        ratio = (r["sampling_s"] + r["scoring_s"]) / r["steps_s"]
        print(
            f"| {preset} | {r['steps_s']:.2f} | {r['samples']} | {r['sampling_s']:.2f} | {r['scoring_s']:.2f} "
            f"| {ratio:.1f}x | {r['verdict']} |"
        )


if __name__ == "__main__":
    main()
