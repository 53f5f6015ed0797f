"""The subject review: judgements that need all of a subject's photos at once.

Pure functions over what analysis stored (numpy only, no database): who the subject is (the
largest cluster of face encodings), which photos show someone else, which are copies of
another photo, and which set of photos training should use. The same code serves the worker
after analysis, the API after an edit, and `lookalike train` on a local folder.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.photos.reasons import REJECTED, SUBJECT_CODES, reason, verdict

SIGNATURE_SIDE = 32
DUPLICATE_ENCODING = 0.45  # copies of one photo are much closer than this; it only narrows the search
DUPLICATE_PHASH_BITS = 6  # whole-image hashes this close: a resize or re-encode
DUPLICATE_COARSE = 0.6  # 8x8 signature correlation worth a closer look
DUPLICATE_FINE = 0.8  # 32x32 signature correlation, best over small shifts and rescales

SHOT_TARGETS = {"close_up": 0.4, "half_body": 0.35, "full_body": 0.25}
POSE_TARGETS = {"frontal": 0.5, "three_quarter": 0.35, "profile": 0.15}
# How much a missing shot, pose, light or a new-looking face weighs against quality (0..1).
SHOT_WEIGHT, POSE_WEIGHT, LIGHT_WEIGHT, NOVELTY_WEIGHT = 0.5, 0.3, 0.15, 0.2


@dataclass
class PhotoFacts:
    """What the review needs of one analysed photo."""

    id: uuid.UUID
    excluded: bool = False
    reasons: list[dict[str, Any]] = field(default_factory=list)  # from the photo's own analysis
    encodings: np.ndarray | None = None  # (faces, 128)
    quality: float = 0.0
    pose: str | None = None
    shot: str | None = None
    brightness: float | None = None
    phash: str | None = None
    signature: bytes | None = None


@dataclass
class Outcome:
    """The review's judgement of one photo."""

    reasons: list[dict[str, Any]]
    verdict: str
    identity_distance: float | None
    duplicate_of: uuid.UUID | None
    encoding_index: int | None  # the face that matches the subject (may differ from the cropped one)
    selected: bool = False


@dataclass
class Review:
    identity: np.ndarray | None
    outcomes: dict[uuid.UUID, Outcome]
    identity_share: float  # share of photos with a face that match the identity


def encodings_from_bytes(data: bytes | None) -> np.ndarray | None:
    if not data:
        return None
    return np.frombuffer(data, dtype=np.float32).reshape(-1, 128)


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d, 0.0))


def find_identity(facts: list[PhotoFacts], threshold: float) -> np.ndarray | None:
    """The centre of the largest group of faces that lie within `threshold` of each other.

    Every face of every photo takes part (a group photo may hold the subject anywhere); a
    face's support counts the other photos that hold a face near it, so one photo cannot
    vote twice. The centre is then refined to the mean of the faces near it, one per photo.
    """
    owners: list[int] = []
    rows: list[np.ndarray] = []
    for i, fact in enumerate(facts):
        if fact.encodings is not None:
            owners.extend([i] * len(fact.encodings))
            rows.append(fact.encodings)
    if not rows:
        return None
    faces = np.concatenate(rows).astype(np.float32)
    owner = np.asarray(owners)
    near = _pairwise(faces, faces) < threshold
    n_photos = len(facts)
    support = np.zeros(len(faces), dtype=np.int64)
    for j in range(len(faces)):  # photos with at least one face near face j
        support[j] = np.unique(owner[near[j]]).size if n_photos > 1 else 1
    # Ties go to the earliest face, i.e. the first photo uploaded.
    seed = int(np.argmax(support))
    centre = faces[seed]
    for _ in range(3):
        members = _nearest_per_photo(faces, owner, centre, threshold)
        if not members:
            break
        centre = faces[members].mean(axis=0)
    return centre.astype(np.float32)


def _nearest_per_photo(faces: np.ndarray, owner: np.ndarray, centre: np.ndarray, threshold: float) -> list[int]:
    dist = np.linalg.norm(faces - centre, axis=1)
    best: dict[int, int] = {}
    for j in np.flatnonzero(dist < threshold):
        o = int(owner[j])
        if o not in best or dist[j] < dist[best[o]]:
            best[o] = int(j)
    return list(best.values())


# Duplicate detection ------------------------------------------------------------------


def _signature_arrays(sig: bytes) -> tuple[np.ndarray, np.ndarray]:
    n = SIGNATURE_SIDE * SIGNATURE_SIDE
    gray = np.frombuffer(sig[:n], dtype=np.uint8).reshape(SIGNATURE_SIDE, SIGNATURE_SIDE).astype(np.float32)
    mask = np.frombuffer(sig[n : 2 * n], dtype=np.uint8).reshape(SIGNATURE_SIDE, SIGNATURE_SIDE) > 0
    return gray, mask


def _coarse(sig: bytes) -> np.ndarray:
    """An 8x8 block-mean of the signature, normalised; empty blocks are 0 after normalising."""
    gray, mask = _signature_arrays(sig)
    g = (gray * mask).reshape(8, 4, 8, 4).sum(axis=(1, 3))
    m = mask.reshape(8, 4, 8, 4).sum(axis=(1, 3))
    valid = m >= 8
    vec = np.where(valid, g / np.maximum(m, 1), 0.0)
    if valid.sum() < 8:
        return np.zeros(64, dtype=np.float32)
    vals = vec[valid]
    vec = np.where(valid, (vec - vals.mean()) / (vals.std() + 1e-3), 0.0)
    return (vec / (np.linalg.norm(vec) + 1e-6)).ravel().astype(np.float32)


def _shift_table() -> tuple[np.ndarray, np.ndarray]:
    """For each small rescale (around the centre) and shift: the flat source index of every
    signature pixel, and whether that source lies inside the signature. (variants, 32*32) each."""
    n = SIGNATURE_SIDE
    centre = (n - 1) / 2
    grid = np.arange(n, dtype=np.float32) - centre
    index, inside = [], []
    for scale in (0.88, 0.94, 1.0, 1.06, 1.12):
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                ys = np.clip(np.rint(grid / scale + centre + dy), -1, n).astype(int)
                xs = np.clip(np.rint(grid / scale + centre + dx), -1, n).astype(int)
                inside.append((((ys >= 0) & (ys < n))[:, None] & ((xs >= 0) & (xs < n))[None, :]).ravel())
                index.append((np.clip(ys, 0, n - 1)[:, None] * n + np.clip(xs, 0, n - 1)[None, :]).ravel())
    return np.stack(index), np.stack(inside)


_SHIFT_INDEX, _SHIFT_INSIDE = _shift_table()  # the same for every signature: built once


def _shifted_stack(gray: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The signature under small rescales and shifts: (variants, 32*32) values and masks."""
    return gray.ravel()[_SHIFT_INDEX], mask.ravel()[_SHIFT_INDEX] & _SHIFT_INSIDE


def signature_match(a: bytes, b: bytes) -> float:
    """Best normalised correlation of two signatures over small shifts and rescales of `b`."""
    return _best_correlation(a, *_shifted_stack(*_signature_arrays(b)))


def _best_correlation(a: bytes, stack: np.ndarray, masks: np.ndarray) -> float:
    """`signature_match` against a ready `_shifted_stack` of the other signature.

    The correlation over each variant's shared pixels, from sums (one pass, float64) rather
    than by centring masked copies: the same figure, several times faster.
    """
    ga, ma = _signature_arrays(a)
    both = (masks & ma.ravel()[None, :]).astype(np.float64)
    count = both.sum(1)
    usable = count >= 0.3 * SIGNATURE_SIDE * SIGNATURE_SIDE
    if not usable.any():
        return -1.0
    x = ga.ravel().astype(np.float64)
    y = stack * both
    n = np.maximum(count, 1)
    sx, sy = both @ x, y.sum(1)
    cov = y @ x - sx * sy / n
    var_x = both @ (x * x) - sx * sx / n
    var_y = (y * stack).sum(1) - sy * sy / n
    corr = cov / np.sqrt(np.maximum(var_x * var_y, 0.0) + 1e-6)
    return float(np.max(np.where(usable, corr, -1.0)))


def _hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def find_duplicates(facts: list[PhotoFacts], chosen: dict[int, int]) -> dict[int, int]:
    """{copy: original} by index into `facts`; the better photo (quality, then age) is kept.

    `chosen` maps a photo to the encoding of its subject face. Photos are visited best
    first and compared only with photos already kept whose face is close, first by the
    whole-image hash (resizes, re-encodes), then by the face signature (crops).
    """
    order = sorted((i for i in chosen if facts[i].signature), key=lambda i: (-facts[i].quality, i))
    kept: list[int] = []
    kept_enc = np.zeros((0, 128), dtype=np.float32)
    kept_coarse = np.zeros((0, 64), dtype=np.float32)
    copies: dict[int, int] = {}
    for i in order:
        fact = facts[i]
        enc = fact.encodings[chosen[i]]  # type: ignore[index]
        coarse = _coarse(fact.signature)  # type: ignore[arg-type]
        shifted = None  # this photo's shifted signatures, made once when a comparison needs them
        if kept:
            close = np.linalg.norm(kept_enc - enc, axis=1) < DUPLICATE_ENCODING
            for k in np.flatnonzero(close):
                other = facts[kept[k]]
                if fact.phash and other.phash and _hamming(fact.phash, other.phash) <= DUPLICATE_PHASH_BITS:
                    copies[i] = kept[k]
                    break
                if float(kept_coarse[k] @ coarse) < DUPLICATE_COARSE:
                    continue
                if shifted is None:
                    shifted = _shifted_stack(*_signature_arrays(fact.signature))  # type: ignore[arg-type]
                if _best_correlation(other.signature, *shifted) >= DUPLICATE_FINE:  # type: ignore[arg-type]
                    copies[i] = kept[k]
                    break
        if i not in copies:
            kept.append(i)
            kept_enc = np.vstack([kept_enc, enc[None, :]])
            kept_coarse = np.vstack([kept_coarse, coarse[None, :]])
    return copies


# Selection ----------------------------------------------------------------------------


def _bonus(labels: list[str], picked: Counter[str], n_picked: int, targets: dict[str, float]) -> np.ndarray:
    """Per candidate: how far its category falls short of its target share, 0..1."""
    out = np.zeros(len(labels))
    for cat, target in targets.items():
        short = max(0.0, target - picked[cat] / max(n_picked, 1)) / target
        out[[lab == cat for lab in labels]] = short
    return out


def select(facts: list[PhotoFacts], usable: list[int], chosen: dict[int, int], limit: int) -> list[int]:
    """The best `limit` usable photos: quality first, then what the set is missing.

    Greedy: each step takes the photo with the highest quality plus a bonus for a shot,
    pose and lighting the set has too few of, and for a face unlike those already taken.
    """
    if len(usable) <= limit:
        return list(usable)
    quality = np.array([facts[i].quality for i in usable])
    bright = np.array([facts[i].brightness if facts[i].brightness is not None else 0.5 for i in usable])
    low, high = np.quantile(bright, [1 / 3, 2 / 3])
    light = ["dim" if b < low else "bright" if b > high else "normal" for b in bright]
    shots = [facts[i].shot or "" for i in usable]
    poses = [facts[i].pose or "" for i in usable]
    enc = np.stack([facts[i].encodings[chosen[i]] for i in usable])  # type: ignore[index]
    nearest = np.full(len(usable), np.inf)
    taken = np.zeros(len(usable), dtype=bool)
    counts = {"shot": Counter(), "pose": Counter(), "light": Counter()}  # type: ignore[var-annotated]
    thirds = {"dim": 1 / 3, "normal": 1 / 3, "bright": 1 / 3}
    picked: list[int] = []
    while len(picked) < limit:
        n = len(picked)
        bonus = (
            SHOT_WEIGHT * _bonus(shots, counts["shot"], n, SHOT_TARGETS)
            + POSE_WEIGHT * _bonus(poses, counts["pose"], n, POSE_TARGETS)
            + LIGHT_WEIGHT * _bonus(light, counts["light"], n, thirds)
        )
        if n:
            bonus = bonus + NOVELTY_WEIGHT * np.minimum(nearest / 0.4, 1.0)
        score = np.where(taken, -np.inf, quality + bonus)
        k = int(np.argmax(score))  # ties: the earliest photo
        taken[k] = True
        picked.append(usable[k])
        counts["shot"][shots[k]] += 1
        counts["pose"][poses[k]] += 1
        counts["light"][light[k]] += 1
        nearest = np.minimum(nearest, np.linalg.norm(enc - enc[k], axis=1))
    return picked


# The whole review ---------------------------------------------------------------------


def review(facts: list[PhotoFacts], *, threshold: float, limit: int, names: dict[uuid.UUID, str]) -> Review:
    """Judge every photo of a subject against the others."""
    identity = find_identity(facts, threshold)
    chosen: dict[int, int] = {}
    distances: dict[int, float] = {}
    if identity is not None:
        for i, fact in enumerate(facts):
            if fact.encodings is not None:
                d = np.linalg.norm(fact.encodings - identity, axis=1)
                chosen[i] = int(np.argmin(d))
                distances[i] = float(d[chosen[i]])
    matching = [i for i in chosen if distances[i] < threshold]
    copies = find_duplicates(facts, {i: chosen[i] for i in matching})

    outcomes: dict[uuid.UUID, Outcome] = {}
    usable: list[int] = []
    for i, fact in enumerate(facts):
        reasons = [r for r in fact.reasons if r.get("code") not in SUBJECT_CODES]
        if i in distances and distances[i] >= threshold:
            reasons.append(reason("different_person", distance=round(distances[i], 4), threshold=threshold))
        if i in copies:
            other = facts[copies[i]].id
            reasons.append(reason("duplicate", other=names.get(other, str(other)), duplicate_of=str(other)))
        outcome = Outcome(
            reasons=reasons,
            verdict=verdict(reasons),
            identity_distance=round(distances[i], 4) if i in distances else None,
            duplicate_of=facts[copies[i]].id if i in copies else None,
            encoding_index=chosen.get(i),
        )
        outcomes[fact.id] = outcome
        if outcome.verdict != REJECTED and not fact.excluded:
            usable.append(i)
    for i in select(facts, usable, chosen, limit):
        outcomes[facts[i].id].selected = True
    with_face = len(chosen)
    return Review(identity=identity, outcomes=outcomes, identity_share=len(matching) / with_face if with_face else 0.0)
