"""Training data: aspect buckets at one or more resolutions, the face weight map, and the batch order.

Everything here is deterministic given the seed, so a resumed run sees the same batches
as an uninterrupted one.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter

from worker.analysis.framing import BUCKETS

Box = tuple[float, float, float, float]


@dataclass
class TrainItem:
    """One training image: the framed crop, its caption, and the face in crop pixels (None: no face known)."""

    key: str  # stable id for the cache (photo id, or file name and hash)
    image: Image.Image
    caption: str
    face_box: Box | None = None


def face_in_crop(face: list[int] | None, crop_box: list[int], crop_width: int) -> Box | None:
    """The face box (stored-image pixels) in the pixels of a crop of `crop_box` stored `crop_width` wide."""
    if not face:
        return None
    left, top, right, _ = crop_box
    scale = crop_width / max(1, right - left)
    return tuple((v - o) * scale for v, o in zip(face, (left, top, left, top), strict=True))  # type: ignore[return-value]


# Bucket sides step by this (kohya's), and by more where a family needs it (see Family.multiple).
BUCKET_STEP = 64


def bucket_size(aspect: float, resolution: int, multiple: int = BUCKET_STEP) -> tuple[int, int]:
    """(width, height) of about resolution² pixels in the bucket closest to `aspect`, sides a multiple of `multiple`."""
    best = min(BUCKETS, key=lambda b: abs(math.log(b / aspect)))
    width = max(multiple, round(resolution * math.sqrt(best) / multiple) * multiple)
    height = max(multiple, round(resolution / math.sqrt(best) / multiple) * multiple)
    return width, height


def fit_image(image: Image.Image, size: tuple[int, int], face: Box | None) -> tuple[Image.Image, Box | None]:
    """Scale to cover `size` and centre-crop (towards the face when there is one); the face box follows."""
    width, height = size
    scale = max(width / image.width, height / image.height)
    new_w, new_h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    resized = image.convert("RGB").resize((new_w, new_h), Image.Resampling.LANCZOS, reducing_gap=3.0)
    cx, cy = new_w / 2, new_h / 2
    if face is not None:
        cx, cy = (face[0] + face[2]) / 2 * scale, (face[1] + face[3]) / 2 * scale
    left = int(min(max(0, round(cx - width / 2)), new_w - width))
    top = int(min(max(0, round(cy - height / 2)), new_h - height))
    out = resized.crop((left, top, left + width, top + height))
    if face is None:
        return out, None
    moved = (face[0] * scale - left, face[1] * scale - top, face[2] * scale - left, face[3] * scale - top)
    return out, moved


def to_pixels(image: Image.Image) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def face_weights(size: tuple[int, int], face: Box | None, weight: float, factor: int) -> torch.Tensor:
    """(1, 1, h, w) loss weights at latent resolution: `weight` on the face, 1 elsewhere, mean 1.

    The face box grows by a fifth (hair, jaw, ears) and its edge is blurred, as kohya's and
    fal's masks are soft, so the LoRA is not taught a hard rectangle.
    """
    width, height = size
    h, w = height // factor, width // factor
    if face is None or weight == 1.0:
        return torch.ones(1, 1, h, w)
    left, top, right, bottom = face
    grow_x, grow_y = (right - left) * 0.2, (bottom - top) * 0.2
    mask = Image.new("L", (width, height), 0)
    box = (left - grow_x, top - grow_y * 1.5, right + grow_x, bottom + grow_y * 0.5)
    mask.paste(255, tuple(int(round(v)) for v in box))
    mask = mask.filter(ImageFilter.GaussianBlur(radius=max(1.0, (right - left) * 0.1)))
    mask = mask.resize((w, h), Image.Resampling.BILINEAR)
    soft = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)
    weights = 1.0 + (weight - 1.0) * soft
    weights = weights / weights.mean()  # the loss keeps its scale, so the learning rate keeps its meaning
    return weights.view(1, 1, h, w)


def batch_schedule(groups: dict[tuple[int, int], list[int]], batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Batches for `steps` steps: each epoch shuffles within each bucket, then shuffles the batches."""
    schedule: list[list[int]] = []
    epoch = 0
    while len(schedule) < steps:
        rng = random.Random(seed * 7919 + epoch)
        batches = []
        for key in sorted(groups):
            members = list(groups[key])
            rng.shuffle(members)
            batches.extend(members[i : i + batch_size] for i in range(0, len(members), batch_size))
        rng.shuffle(batches)
        schedule.extend(batches)
        epoch += 1
    return schedule[:steps]
