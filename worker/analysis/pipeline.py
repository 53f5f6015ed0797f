"""Everything analysis learns from one photo's bytes, with no database or storage involved.

The worker task, `lookalike train` and the benchmark all call `analyze_image`. Subject-wide
judgements (same person, duplicates, selection) need the other photos and are made in
`app.photos.review` from what this returns.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from app.photos.ingest import make_thumbnail
from app.photos.reasons import reason
from worker.analysis import faces as face_lib
from worker.analysis import framing, measures

WORK_SHORT_SIDE = 1024  # decode large JPEGs at the smallest DCT scale that keeps this much
CROP_MAX_SHORT_SIDE = 1536  # crops larger than this on their shorter side are box-reduced

# Thresholds, in the units of `measures` (faces resampled to 160 px), set on the fixtures and
# on blurred, darkened and brightened copies of them (tests/worker/test_analysis_pipeline.py).
FACE_REJECT_PX = 64
FACE_WARN_PX = 128
SHARP_WARN = 40.0
SHARP_REJECT = 10.0
SHARP_GOOD = 200.0
DARK_BRIGHTNESS = 0.22
DARK_SHARE = 0.35
BRIGHT_BRIGHTNESS = 0.86
CLIPPED_SHARE = 0.25
GREY_CHROMA = 0.025


@dataclass
class Analysis:
    """One photo's analysis; boxes are in the stored image's pixels."""

    format: str
    width: int
    height: int
    thumb: bytes
    face_count: int = 0
    faces: list[dict[str, Any]] = field(default_factory=list)  # every detection: box, pose, encoded
    encodings: np.ndarray | None = None  # (encoded faces, 128) float32, in `faces` order
    face_index: int | None = None  # which of `faces` is the subject
    face_box: list[int] | None = None
    pose: str | None = None
    shot: str | None = None
    sharpness: float | None = None
    brightness: float | None = None
    colourfulness: float | None = None
    quality: float | None = None
    reasons: list[dict[str, Any]] = field(default_factory=list)
    signature: bytes | None = None
    phash: str | None = None
    crop: bytes | None = None
    crop_box: list[int] | None = None
    square_box: list[int] | None = None
    auto_caption: str | None = None


def decode(data: bytes, *, short_side: int = WORK_SHORT_SIDE) -> tuple[Image.Image, str, tuple[int, int]]:
    """The image as RGB, decoded no larger than needed; also its format and full size.

    JPEG decoding can scale by 1/2, 1/4 or 1/8 inside the DCT (`draft`), which makes a
    12-megapixel photo several times cheaper to read. Transparency is flattened onto white.
    """
    img = Image.open(io.BytesIO(data))
    fmt = img.format or "unknown"
    full = img.size
    if fmt == "JPEG" and min(full) > short_side:
        factor = short_side / min(full)
        img.draft("RGB", (math.ceil(full[0] * factor), math.ceil(full[1] * factor)))
    img.load()
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        img = flat
    elif img.mode != "RGB":
        img = img.convert("RGB")
    return img, fmt, full


_SHOT_WORDS = {"close_up": "close-up", "half_body": "half-body shot", "full_body": "full-body shot"}
_POSE_WORDS = {"frontal": "looking at the camera", "three_quarter": "three-quarter view", "profile": "profile view"}


def caption_for(class_word: str, shot: str | None, pose: str | None) -> str:
    """The caption template used when the user gave none; `{trigger}` is filled at training."""
    parts = [f"photo of {{trigger}} {class_word}"]
    if shot:
        parts.append(_SHOT_WORDS[shot])
    if pose:
        parts.append(_POSE_WORDS[pose])
    return ", ".join(parts)


def quality_score(*, sharp: float, face_px: int, brightness: float, cut: bool, grey: bool) -> float:
    """0..1: sharpness and face resolution first, exposure after; used to rank and to pick copies."""
    s = (math.log(max(sharp, 1e-3)) - math.log(SHARP_REJECT)) / (math.log(SHARP_GOOD) - math.log(SHARP_REJECT))
    r = face_px / 256
    e = 1.0 - min(max(abs(brightness - 0.5) - 0.15, 0.0), 0.35) / 0.35
    score = 0.45 * min(max(s, 0.0), 1.0) + 0.35 * min(max(r, 0.0), 1.0) + 0.2 * e
    if cut:
        score *= 0.6
    if grey:
        score *= 0.85
    return round(score, 4)


def _choose(faces: list[face_lib.Face], identity: np.ndarray | None) -> int:
    encoded = [i for i, f in enumerate(faces) if f.encoding is not None]
    if identity is None or len(encoded) < 2:
        return encoded[0] if encoded else 0
    return min(encoded, key=lambda i: float(np.linalg.norm(faces[i].encoding - identity)))


def _jpeg(img: Image.Image, quality: int = 95) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def analyze_image(
    data: bytes,
    *,
    class_word: str = "person",
    identity: np.ndarray | None = None,
    thumb_size: int = 512,
    face_index: int | None = None,
    cnn_fallback: bool = True,
) -> Analysis:
    """Analyse one upright image. `identity` (a 128-d encoding) picks the face in group photos."""
    img, fmt, (width, height) = decode(data)
    scale = width / img.width  # decoded pixels -> stored pixels
    # One small copy serves detection, the thumbnail and the whole-image measures.
    small = face_lib.downscaled(img)
    thumb = make_thumbnail(small if max(small.size) >= thumb_size else img, thumb_size)
    result = Analysis(format=fmt, width=width, height=height, thumb=thumb)
    result.phash = measures.phash(small)
    result.colourfulness = measures.colourfulness(small)

    found = face_lib.find_faces(np.asarray(img), cnn_fallback=cnn_fallback, small=np.asarray(small))
    result.face_count = len(found)
    if not found:
        result.reasons = [reason("no_face")]
        return result  # no caption: a photo without the person is never trained on

    encoded = [f for f in found if f.encoding is not None]
    result.encodings = np.stack([f.encoding for f in encoded]).astype(np.float32)
    for f in found:
        kind, ratio = face_lib.pose(f.upright_landmarks)
        f.extras = {"pose": kind, "yaw_ratio": round(ratio, 3)}
        result.faces.append(
            {
                "box": [round(v * scale) for v in f.box],
                "pose": kind,
                "detector": f.detector,
                "encoding": encoded.index(f) if f.encoding is not None else None,
            }
        )
    index = face_index if face_index is not None and face_index < len(found) else _choose(found, identity)
    face = found[index]
    result.face_index = index
    return _describe_face(result, img, face, scale, class_word)


def _describe_face(result: Analysis, img: Image.Image, face: face_lib.Face, scale: float, class_word: str) -> Analysis:
    reasons: list[dict[str, Any]] = []
    if result.face_count > 1:
        reasons.append(reason("multiple_faces", count=result.face_count))

    inside = (max(0, face.box[0]), max(0, face.box[1]), min(img.width, face.box[2]), min(img.height, face.box[3]))
    face_px = round(face.width * scale)
    cut = face_lib.cut_off(face, img.width, img.height)
    gray = measures.face_region(img, face.box)
    sharp = measures.sharpness(gray)
    light = measures.exposure(gray)
    grey = (result.colourfulness or 0.0) < GREY_CHROMA

    if face_px < FACE_REJECT_PX:
        reasons.append(reason("face_too_small", size=face_px))
    elif face_px < FACE_WARN_PX:
        reasons.append(reason("low_resolution", size=face_px))
    if sharp < SHARP_REJECT:
        reasons.append(reason("too_blurry", sharpness=round(sharp, 1)))
    elif sharp < SHARP_WARN:
        reasons.append(reason("blurry", sharpness=round(sharp, 1)))
    if light.brightness < DARK_BRIGHTNESS or light.dark_share > DARK_SHARE:
        reasons.append(reason("too_dark", brightness=round(light.brightness, 3)))
    elif light.brightness > BRIGHT_BRIGHTNESS or light.clipped_share > CLIPPED_SHARE:
        reasons.append(reason("overexposed", brightness=round(light.brightness, 3)))
    if cut:
        reasons.append(reason("face_cut_off"))
    if grey:
        reasons.append(reason("black_and_white"))

    kind = framing.shot(face.box, img.height)
    bucket, square = framing.crop_boxes(face.box, kind, img.width, img.height)
    crop = img.crop(bucket)
    if min(crop.size) > CROP_MAX_SHORT_SIDE:
        crop = crop.reduce(math.ceil(min(crop.size) / CROP_MAX_SHORT_SIDE))

    result.face_box = [round(v * scale) for v in inside]
    result.pose = str(face.extras["pose"])
    result.shot = kind
    result.sharpness = round(sharp, 2)
    result.brightness = round(light.brightness, 4)
    result.quality = quality_score(sharp=sharp, face_px=face_px, brightness=light.brightness, cut=cut, grey=grey)
    result.reasons = reasons
    result.signature = measures.signature(img, face.box)
    result.crop = _jpeg(crop)
    result.crop_box = [round(v * scale) for v in bucket]
    result.square_box = [round(v * scale) for v in square]
    result.auto_caption = caption_for(class_word, kind, result.pose)
    return result
