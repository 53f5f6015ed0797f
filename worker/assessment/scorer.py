"""Scoring samples against the person: likeness, face detection, memorization, bleed, diversity.

Everything here works on plain images and 128-d dlib encodings, so the unit tests feed real
photos in as if they were samples.

Likeness scale. dlib's encodings put two photos of one person usually under 0.6 apart
(face_recognition's tolerance) and two people usually over it. `similarity(d)` maps the
distance linearly, 100 at 0.40 or less and 0 at 0.90 or more:

    distance   0.40  0.50  0.60  0.70  0.80  0.90
    similarity  100    80    60    40    20     0

and the verdict bands are excellent >= 80, good >= 60, weak >= 30, failed below. So the
same-person threshold 0.6 is the line between "good" and "weak": a model whose faces dlib
would call this person is at least good; one it would call someone else is at best weak.

Memorization. A sample face that is much closer to one training photo than the held-out
photos (same person, not trained on) are to any training photo is a copy, not a likeness:
flagged when its nearest training distance is under half the held-out photos' median (or,
without held-out photos, under `COPY_DISTANCE`), or when its perceptual hash is within
`COPY_HASH_BITS` of a training image's.

Identity bleed. The samples of prompts without the trigger word should show somebody else:
their faces' similarity to the subject (0-100, median) is the bleed; at 60 or more (dlib
would call them the subject) the LoRA paints the user onto everyone.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from PIL import Image, ImageOps

SAME_PERSON = 0.6  # dlib's usual threshold
BANDS = (("excellent", 80.0), ("good", 60.0), ("weak", 30.0))  # score >= limit; below the last: failed
COPY_DISTANCE = 0.15  # two encodings this close come from (nearly) the same photo
COPY_HASH_BITS = 6  # of 64 perceptual-hash bits
MEMORIZES_AT = 0.25  # a checkpoint memorizes when more than this share of its faces are copies
BLEEDS_AT = 60.0  # bleed similarity from which the no-trigger faces are the subject
CNN_MIN_SIDE = 128  # smaller samples are not searched with the slow CNN detector (no face to score there)


def similarity(distance: float) -> float:
    """0-100 likeness for a dlib encoding distance (see the table in the module docstring)."""
    return round(min(100.0, max(0.0, 180.0 - 200.0 * distance)), 1)


def verdict_for(score: float | None) -> str:
    if score is None:
        return "failed"
    return next((name for name, limit in BANDS if score >= limit), "failed")


@dataclass(frozen=True)
class TrainingRef:
    """One training photo as the scorer sees it: its subject encoding and perceptual hash."""

    name: str
    encoding: np.ndarray | None
    phash: str | None


@dataclass
class References:
    """What samples are compared with: the subject, the photos trained on, and those held out."""

    identity: np.ndarray | None
    training: list[TrainingRef] = field(default_factory=list)
    held_out: list[np.ndarray] = field(default_factory=list)

    @property
    def held_out_centre(self) -> np.ndarray | None:
        return np.mean(self.held_out, axis=0) if self.held_out else None

    def held_out_baseline(self) -> float | None:
        """Median distance from a held-out photo to its nearest training photo: what 'the same
        person, a different photo' looks like for this subject."""
        encoded = [t.encoding for t in self.training if t.encoding is not None]
        if not self.held_out or not encoded:
            return None
        train = np.stack(encoded)
        return float(statistics.median(float(np.linalg.norm(train - h, axis=1).min()) for h in self.held_out))


@dataclass
class SampleScore:
    faces: int
    identity_distance: float | None = None  # to the subject's identity
    held_out_distance: float | None = None  # to the held-out photos' centre
    similarity: float | None = None  # 0-100, from the held-out distance when there are held-out photos
    memorized: bool = False
    copy_of: str | None = None  # the training photo it copies
    pose: str | None = None
    yaw: float | None = None  # 1 facing the camera, towards 0 in profile
    face_share: float | None = None  # face box area / image area (framing)


def score_image(image: Image.Image, refs: References) -> SampleScore:
    """Find the face most like the subject in `image` and measure it against the references."""
    from worker.analysis import faces as face_lib
    from worker.analysis.measures import phash

    rgb = np.asarray(image.convert("RGB"))
    found = face_lib.find_faces(rgb, cnn_fallback=min(image.size) >= CNN_MIN_SIDE)
    encoded = [f for f in found if f.encoding is not None]
    if not encoded:
        return SampleScore(faces=len(found))
    if refs.identity is not None:
        face = min(encoded, key=lambda f: float(np.linalg.norm(f.encoding - refs.identity)))
    else:
        face = encoded[0]
    enc = face.encoding
    score = SampleScore(faces=len(found))
    if refs.identity is not None:
        score.identity_distance = round(float(np.linalg.norm(enc - refs.identity)), 4)
    centre = refs.held_out_centre
    if centre is not None:
        score.held_out_distance = round(float(np.linalg.norm(enc - centre)), 4)
    reference = score.held_out_distance if score.held_out_distance is not None else score.identity_distance
    score.similarity = similarity(reference) if reference is not None else None
    kind, ratio = face_lib.pose(face.upright_landmarks)
    score.pose, score.yaw = kind, round(ratio, 3)
    left, top, right, bottom = face.box
    score.face_share = round(max(0, right - left) * max(0, bottom - top) / (image.width * image.height), 4)
    score.copy_of = _copied(enc, (phash(image), phash(ImageOps.mirror(image))), refs)
    score.memorized = score.copy_of is not None
    return score


def _copied(encoding: np.ndarray, hashes: tuple[str, ...], refs: References) -> str | None:
    """The training photo this face copies, if it does (see the module docstring)."""
    baseline = refs.held_out_baseline()
    limit = COPY_DISTANCE if baseline is None else max(COPY_DISTANCE, 0.5 * baseline)
    best, best_name = None, None
    for ref in refs.training:
        if ref.phash and any(_hamming(ref.phash, h) <= COPY_HASH_BITS for h in hashes):  # mirrored too
            return ref.name
        if ref.encoding is not None:
            d = float(np.linalg.norm(encoding - ref.encoding))
            if best is None or d < best:
                best, best_name = d, ref.name
    return best_name if best is not None and best < limit else None


def _hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


@dataclass
class CheckpointScore:
    """One checkpoint's samples summed up; `subject` are the trigger prompts', `others` the no-trigger ones."""

    step: int
    subject: list[SampleScore]
    others: list[SampleScore]

    @property
    def face_detection_rate(self) -> float:
        return (
            round(sum(1 for s in self.subject if s.similarity is not None) / len(self.subject), 3)
            if self.subject
            else 0.0
        )

    @property
    def identity_similarity(self) -> float | None:
        values = [s.similarity for s in self.subject if s.similarity is not None]
        return round(statistics.median(values), 1) if values else None

    @property
    def distance(self) -> float | None:
        """Median distance behind `identity_similarity`: it still ranks checkpoints where similarity is 100."""
        values = [
            s.held_out_distance if s.held_out_distance is not None else s.identity_distance
            for s in self.subject
            if s.similarity is not None
        ]
        return statistics.median(values) if values else None  # type: ignore[type-var]

    @property
    def memorization(self) -> float:
        faces = [s for s in self.subject if s.similarity is not None]
        return round(sum(s.memorized for s in faces) / len(faces), 3) if faces else 0.0

    @property
    def identity_bleed(self) -> float | None:
        values = [similarity(s.identity_distance) for s in self.others if s.identity_distance is not None]
        return round(statistics.median(values), 1) if values else None

    @property
    def diversity(self) -> float | None:
        """0-1: how much pose and framing vary across the subject samples (mean pairwise difference)."""
        faces = [s for s in self.subject if s.face_share is not None and s.yaw is not None]
        if len(faces) < 2:
            return None
        # A 16x change of face area (close-up to full body) counts as fully different framing.
        points = [(float(np.log(max(s.face_share, 1e-4)) / np.log(16)), float(s.yaw)) for s in faces]  # type: ignore[arg-type]
        diffs = [min(1.0, abs(a[0] - b[0]) + abs(a[1] - b[1])) for a, b in combinations(points, 2)]
        return round(sum(diffs) / len(diffs), 3)

    @property
    def memorizes(self) -> bool:
        return self.memorization > MEMORIZES_AT

    @property
    def bleeds(self) -> bool:
        return self.identity_bleed is not None and self.identity_bleed >= BLEEDS_AT

    def summary(self) -> dict[str, object]:
        return {
            "step": self.step,
            "identity_similarity": self.identity_similarity,
            "face_detection_rate": self.face_detection_rate,
            "memorization": self.memorization,
            "identity_bleed": self.identity_bleed,
            "diversity": self.diversity,
        }


def choose(checkpoints: Sequence[CheckpointScore]) -> CheckpointScore:
    """The best held-out likeness among checkpoints that neither memorize nor bleed; else the least
    flawed likeness; with no faces anywhere, the last checkpoint."""
    checkpoints = sorted(checkpoints, key=lambda c: c.step)
    with_faces = [c for c in checkpoints if c.identity_similarity is not None]
    if not with_faces:
        return checkpoints[-1]
    fewest = min(c.memorizes + c.bleeds for c in with_faces)  # 0: clean
    pool = [c for c in with_faces if c.memorizes + c.bleeds == fewest]
    # The nearer median distance breaks ties of the (capped) similarity; then the earlier step wins.
    return max(pool, key=lambda c: (c.identity_similarity or 0.0, -(c.distance or 0.0), -c.step))


def overall_score(chosen: CheckpointScore) -> float | None:
    """The model's 0-100: the likeness, lowered when faces are often missing, and for a copy or a bleed."""
    if chosen.identity_similarity is None:
        return None
    score = chosen.identity_similarity * min(1.0, chosen.face_detection_rate / 0.75)
    if chosen.memorizes:
        score -= 20
    if chosen.bleeds:
        score -= 20
    return round(max(0.0, score), 1)


def advice(
    checkpoints: Sequence[CheckpointScore], chosen: CheckpointScore, score: float | None, *, tiny: bool, trigger: str
) -> str:
    """One or two sentences a non-expert can act on."""
    if score is None:
        if tiny:
            return (
                "No faces in the samples, so likeness could not be measured: tiny test models make noise. "
                "Train on sd15, sdxl or flux-dev for a real model."
            )
        return (
            "No faces in the samples, so likeness could not be measured. "
            "Train again with more steps, and check that every photo shows the same person's face clearly."
        )
    sentences = []
    later = sorted((c for c in checkpoints if c.step > chosen.step and (c.memorizes or c.bleeds)), key=lambda c: c.step)
    if later:
        sentences.append(f"Overfitting after step {later[0].step}: the step-{chosen.step} weights were kept.")
    if chosen.bleeds:
        sentences.append("The model paints this face onto everyone: train with fewer steps or a lower learning rate.")
    elif chosen.memorizes:
        sentences.append("The samples copy your training photos: add more varied photos, or train with fewer steps.")
    verdict = verdict_for(score)
    if verdict in ("weak", "failed"):
        sentences.append("Likeness is weak: add close-ups in different light and from other angles, then train again.")
    elif chosen.face_detection_rate < 0.5:
        sentences.append("Faces are often missing from the samples: add more close-ups and train again.")
    elif (chosen.diversity or 0.0) < 0.1 and len(sentences) < 2:
        sentences.append("The samples all share one pose and framing: add half-body shots and other angles.")
    if not sentences:
        sentences.append(f"Likeness is {verdict}: put {trigger} in your prompts to get this face.")
    return " ".join(sentences[:2])
