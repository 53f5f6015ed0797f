"""Pixel measures of a face region: sharpness, exposure, colour, and a signature for duplicates.

Each measure is taken on the face resampled to a fixed size, so a value means the same thing
for a selfie and for a face that is 80 pixels wide in a group photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

MEASURE_SIDE = 160  # the face is resampled (never enlarged) to this square before sharpness and exposure
SIGNATURE_SIDE = 32  # grid of the duplicate signature (see app.photos.review)
SIGNATURE_EXPAND = 2.0  # the signature covers the face box grown this much: hair, collar, background


@dataclass(frozen=True)
class Exposure:
    brightness: float  # mean luminance of the face, 0..1
    dark_share: float  # share of face pixels that are nearly black
    clipped_share: float  # share of face pixels that are blown out


def face_region(img: Image.Image, box: tuple[int, int, int, int], *, inset: float = 0.1) -> Image.Image:
    """The inner part of the face box (no background), as a MEASURE_SIDE grayscale square."""
    left, top, right, bottom = box
    dx, dy = (right - left) * inset, (bottom - top) * inset
    area = (
        max(0, int(left + dx)),
        max(0, int(top + dy)),
        min(img.width, int(right - dx)),
        min(img.height, int(bottom - dy)),
    )
    if area[2] - area[0] < 4 or area[3] - area[1] < 4:
        area = (0, 0, img.width, img.height)
    # Never enlarge: upsampling a small face would read as blur, and size has its own reason.
    side = min(MEASURE_SIDE, area[2] - area[0], area[3] - area[1])
    return img.convert("L").resize((side, side), Image.Resampling.BILINEAR, box=area)


def sharpness(gray: Image.Image) -> float:
    """Variance of the Laplacian of the face relative to its contrast: high for crisp detail.

    Dividing by the face's own variance keeps a dim but sharp photo from reading as blurry;
    exposure has its own measure.
    """
    a = np.asarray(gray, dtype=np.float32)
    lap = 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]
    return float(1000.0 * lap.var() / (a.var() + 25.0))


def exposure(gray: Image.Image) -> Exposure:
    a = np.asarray(gray, dtype=np.float32)
    return Exposure(
        brightness=float(a.mean() / 255.0),
        dark_share=float((a < 20).mean()),
        clipped_share=float((a > 245).mean()),
    )


def colourfulness(rgb: Image.Image) -> float:
    """Mean chroma of a small copy: near 0 for black-and-white or sepia-free grey photos."""
    small = rgb.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)
    a = np.asarray(small, dtype=np.float32)
    return float((a.max(axis=2) - a.min(axis=2)).mean() / 255.0)


def signature(img: Image.Image, box: tuple[int, int, int, int]) -> bytes:
    """A coarse grayscale picture of the face and its surroundings plus a mask of what was in frame.

    Two photos whose signatures match after a small shift and rescale show the same pixels:
    one is a crop, resize or re-encode of the other. Stored as SIGNATURE_SIDE² luminance bytes
    followed by SIGNATURE_SIDE² mask bytes (0 where the area lies outside the photo).
    """
    left, top, right, bottom = box
    cx, cy = (left + right) / 2, (top + bottom) / 2
    half = max(right - left, bottom - top) * SIGNATURE_EXPAND / 2
    extent = (cx - half, cy - half, cx + half, cy + half)
    size = (SIGNATURE_SIDE, SIGNATURE_SIDE)
    gray = img.convert("L").transform(size, Image.Transform.EXTENT, extent, Image.Resampling.BILINEAR, fillcolor=0)
    frame = Image.new("L", img.size, 255)
    mask = frame.transform(size, Image.Transform.EXTENT, extent, Image.Resampling.NEAREST, fillcolor=0)
    return gray.tobytes() + bytes(1 if v else 0 for v in mask.tobytes())


_DCT = np.cos(np.pi * (2 * np.arange(32)[None, :] + 1) * np.arange(32)[:, None] / 64).astype(np.float32)


def phash(img: Image.Image) -> str:
    """64-bit perceptual hash (DCT of a 32x32 grayscale copy) as 16 hex digits."""
    a = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32)
    low = (_DCT @ a @ _DCT.T)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"
