"""Likeness scorer: how well `similarity` tells the same person from another, and its cost per sample.

1. separation: every unordered pair of fixture photos with a face (the obama photos are one
   person, biden.jpg another), with the dlib encoding distance and `similarity(distance)`.
   The ROC AUC of the similarity as a same-person score (rank / Mann-Whitney formula), the
   lowest same-person and highest different-person similarity, next to the baseline: the
   AUC of the plain distance and the accuracy of dlib's usual threshold (same when d <= 0.6).
   obama_partial_face*.jpg are crops of obama.jpg and obama_rgba.png is obama2.jpg
   re-encoded: they are kept, marked, and a second row leaves them out.
2. speed: `score_image` on each fixture as if it were a sample (trained on obama.jpg and
   obama2.jpg, obama3.jpg held out), mean of --repeats calls after a warm-up, on this machine.

    .venv/bin/python bench/scorer.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT / "tests" / "fixtures"
NAMES = [
    "obama.jpg",
    "obama2.jpg",
    "obama3.jpg",
    "obama_rgba.png",
    "obama_partial_face.jpg",
    "obama_partial_face2.jpg",
    "biden.jpg",
    "chelsea.png",
    "coffee.png",
]
SOURCE = {  # near-duplicates: the photo each one is made from
    "obama_rgba.png": "obama2.jpg",
    "obama_partial_face.jpg": "obama.jpg",
    "obama_partial_face2.jpg": "obama.jpg",
}
TRAINED, HELD_OUT = ("obama.jpg", "obama2.jpg"), ("obama3.jpg",)


def _person(name: str) -> str:
    return "obama" if name.startswith("obama") else Path(name).stem


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(a positive outscores a negative), ties counting half: the Mann-Whitney U over n+ * n-."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # tied scores share their mean rank
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def load() -> tuple[dict[str, Image.Image], dict[str, np.ndarray]]:
    from worker.analysis import faces as face_lib

    images, encodings = {}, {}
    for name in NAMES:
        img = Image.open(FIXTURES / name)
        img.load()
        images[name] = img
        found = face_lib.find_faces(np.asarray(img.convert("RGB")))
        if found and found[0].encoding is not None:
            encodings[name] = found[0].encoding
    return images, encodings


def separation(encodings: dict[str, np.ndarray]) -> None:
    from worker.assessment.scorer import SAME_PERSON, similarity

    rows = []
    for a, b in combinations(encodings, 2):
        distance = float(np.linalg.norm(encodings[a] - encodings[b]))
        note = "near-duplicate" if SOURCE.get(a, a) == SOURCE.get(b, b) else ""
        rows.append((a, b, _person(a) == _person(b), distance, similarity(distance), note))

    def mark(name: str) -> str:
        return f"{name} *" if name in SOURCE else name

    print(f"\nPairs of fixture photos with a face ({len(encodings)} photos, {len(rows)} pairs; * derived photo):\n")
    print("| photo | photo | same person | distance | similarity | note |")
    print("|---|---|---|---:|---:|---|")
    for a, b, same, distance, sim, note in sorted(rows, key=lambda r: r[3]):
        print(f"| {mark(a)} | {mark(b)} | {'yes' if same else 'no'} | {distance:.3f} | {sim:.1f} | {note} |")
    print(
        "\n* "
        + "; ".join(f"{name}: {'crop' if 'partial' in name else 're-encode'} of {src}" for name, src in SOURCE.items())
    )

    print(f"\nSeparation (dlib baseline: same person when distance <= {SAME_PERSON}):\n")
    print(
        "| pairs | same / different | AUC similarity | AUC distance (baseline) "
        "| min same sim | max different sim | accuracy sim >= 60 | accuracy d <= 0.6 (baseline) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    subsets = {
        "all": rows,
        "distinct photos only": [r for r in rows if r[0] not in SOURCE and r[1] not in SOURCE],
    }
    for label, subset in subsets.items():
        same = np.array([r[2] for r in subset])
        distance = np.array([r[3] for r in subset])
        sim = np.array([r[4] for r in subset])
        print(
            f"| {label} ({len(subset)}) | {int(same.sum())} / {int((~same).sum())} "
            f"| {auc(sim, same):.3f} | {auc(-distance, same):.3f} "
            f"| {sim[same].min():.1f} | {sim[~same].max():.1f} "
            f"| {np.mean((sim >= 60) == same):.0%} | {np.mean((distance <= SAME_PERSON) == same):.0%} |"
        )


def speed(images: dict[str, Image.Image], encodings: dict[str, np.ndarray], repeats: int) -> None:
    from worker.analysis.measures import phash
    from worker.assessment.scorer import References, TrainingRef, score_image

    refs = References(
        identity=np.mean([encodings[n] for n in TRAINED], axis=0),
        training=[TrainingRef(n, encodings[n], phash(images[n])) for n in TRAINED],
        held_out=[encodings[n] for n in HELD_OUT],
    )
    print(f"\n`score_image` per sample, mean of {repeats} (trained on {', '.join(TRAINED)}; {HELD_OUT[0]} held out):\n")
    print("| image | size | faces | similarity | memorized | mean ms |")
    print("|---|---|---:|---:|---|---:|")
    means = []
    for name, img in images.items():
        score = score_image(img, refs)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            score_image(img, refs)
            times.append(time.perf_counter() - t0)
        means.append(sum(times) / len(times) * 1000)
        copy = f"yes ({score.copy_of})" if score.memorized else "no"
        sim = "-" if score.similarity is None else f"{score.similarity:.1f}"
        print(f"| {name} | {img.width}x{img.height} | {score.faces} | {sim} | {copy} | {means[-1]:.0f} |")
    print(f"| **mean** | | | | | **{sum(means) / len(means):.0f}** |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed score_image calls per image")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(f"commit {commit}, {os.cpu_count()} CPUs")
    images, encodings = load()
    separation(encodings)
    speed(images, encodings, args.repeats)


if __name__ == "__main__":
    main()
