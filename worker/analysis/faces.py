"""Faces in a photo: dlib's detectors, landmarks and 128-d identity encodings.

The naive use of face_recognition decodes the full image and runs the HOG detector on it
upsampled once, which costs seconds on a 12-megapixel photo. Here detection runs on a copy
whose longest side is `DETECT_SIDE`; a face too small for that copy is looked for again with
one upsampling, and only when HOG finds nothing does the (slow, but pose-tolerant) CNN
detector run, so three-quarter and profile shots are not thrown away. Landmarks and
encodings are taken on the larger decoded image, so small faces keep their detail.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

DETECT_SIDE = 640  # HOG on this copy finds faces down to ~80 px, i.e. 1/8 of the long side
CNN_SIDE = 480  # the CNN costs ~1 s at this size on one core; it is the last resort
MAX_ENCODED = 4  # group photos: encode the largest faces only
MIN_RELATIVE_SIZE = 0.35  # faces smaller than this share of the largest are background


@dataclass
class Face:
    """One detected face, in the coordinates of the image given to `find_faces`."""

    box: tuple[int, int, int, int]  # left, top, right, bottom; may reach past the border
    detector: str  # hog | hog_upsampled | cnn
    landmarks: np.ndarray | None = None  # 68 x 2 (x, y)
    encoding: np.ndarray | None = None  # 128 float32
    chip: np.ndarray | None = None  # 150 x 150 RGB aligned face, for the duplicate hash
    extras: dict[str, object] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


class FaceModels:
    """dlib's models, loaded once per process on first use (never at import time)."""

    _lock = threading.Lock()
    _instance: FaceModels | None = None

    def __init__(self) -> None:
        import dlib
        import face_recognition_models as frm

        self.dlib = dlib
        self.hog = dlib.get_frontal_face_detector()
        self.cnn = dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())
        self.landmarks68 = dlib.shape_predictor(frm.pose_predictor_model_location())
        self.landmarks5 = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    @classmethod
    def get(cls) -> FaceModels:
        with cls._lock:
            if cls._instance is None:
                cls._instance = FaceModels()
            return cls._instance


def _scaled(rect: object, factor: float) -> tuple[int, int, int, int]:
    return (
        round(rect.left() * factor),  # type: ignore[attr-defined]
        round(rect.top() * factor),  # type: ignore[attr-defined]
        round(rect.right() * factor),  # type: ignore[attr-defined]
        round(rect.bottom() * factor),  # type: ignore[attr-defined]
    )


def downscaled(img: Image.Image, side: int = DETECT_SIDE) -> Image.Image:
    """A copy whose longest side is at most `side` (the image itself when already that small)."""
    factor = max(img.size) / side
    if factor <= 1:
        return img
    size = (max(1, round(img.width / factor)), max(1, round(img.height / factor)))
    # Box-reduce by the integer part first: much cheaper than a wide bilinear filter.
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=1.0)


def _downscaled(rgb: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    small = np.asarray(downscaled(Image.fromarray(rgb), side))
    return small, rgb.shape[1] / small.shape[1]


def _resized(rgb: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """A copy whose longest side is exactly `side` (up or down), and the factor back."""
    h, w = rgb.shape[:2]
    factor = max(h, w) / side
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR)), factor


def detect(
    rgb: np.ndarray,
    *,
    models: FaceModels | None = None,
    cnn_fallback: bool = True,
    small: np.ndarray | None = None,
) -> list[Face]:
    """Face boxes in `rgb` (H x W x 3 uint8), largest first; `small` is a ready detection copy."""
    models = models or FaceModels.get()
    if small is None:
        small, factor = _downscaled(rgb, DETECT_SIDE)
    else:
        factor = rgb.shape[1] / small.shape[1]
    faces = [Face(_scaled(r, factor), "hog") for r in models.hog(small, 0)]
    if not faces:
        faces = [Face(_scaled(r, factor), "hog_upsampled") for r in models.hog(small, 1)]
    if not faces and cnn_fallback:
        tiny, cnn_factor = _resized(rgb, CNN_SIDE)
        found = models.cnn(tiny, 0)
        faces = [Face(_scaled(d.rect, cnn_factor), "cnn") for d in found if d.confidence > 0.3]
    faces.sort(key=lambda f: f.width * f.height, reverse=True)
    return faces


def describe(rgb: np.ndarray, faces: list[Face], *, models: FaceModels | None = None) -> list[Face]:
    """Landmarks for every face; encodings and aligned chips for the main ones (in place)."""
    models = models or FaceModels.get()
    dlib = models.dlib
    if not faces:
        return faces
    largest = faces[0].width
    for index, face in enumerate(faces):
        rect = dlib.rectangle(*face.box)
        shape = models.landmarks68(rgb, rect)
        face.landmarks = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        if index < MAX_ENCODED and face.width >= MIN_RELATIVE_SIZE * largest:
            five = models.landmarks5(rgb, rect)
            chip = dlib.get_face_chip(rgb, five, size=150, padding=0.25)
            face.chip = chip
            face.encoding = np.asarray(models.encoder.compute_face_descriptor(chip), dtype=np.float32)
    return faces


def find_faces(rgb: np.ndarray, *, cnn_fallback: bool = True, small: np.ndarray | None = None) -> list[Face]:
    """Detect and describe the faces of an upright RGB image."""
    models = FaceModels.get()
    found = detect(rgb, models=models, cnn_fallback=cnn_fallback, small=small)
    return describe(rgb, found, models=models)


def pose(landmarks: np.ndarray) -> tuple[str, float]:
    """frontal | three_quarter | profile, from how far the nose tip sits from the face's middle.

    The ratio of the nose tip's horizontal distances to the two jaw ends is 1 for a face
    looking at the camera and falls towards 0 as the head turns.
    """
    nose_x = float(landmarks[30, 0])
    left = nose_x - float(landmarks[0, 0])
    right = float(landmarks[16, 0]) - nose_x
    if left <= 0 or right <= 0:
        return "profile", 0.0
    ratio = min(left, right) / max(left, right)
    if ratio >= 0.45:
        return "frontal", ratio
    if ratio >= 0.2:
        return "three_quarter", ratio
    return "profile", ratio


def cut_off(face: Face, width: int, height: int) -> bool:
    """True when part of the face lies outside the frame."""
    left, top, right, bottom = face.box
    margin_x, margin_y = 0.04 * face.width, 0.04 * face.height
    if left < -margin_x or top < -margin_y or right > width + margin_x or bottom > height + margin_y:
        return True
    if face.landmarks is not None:
        xs, ys = face.landmarks[:, 0], face.landmarks[:, 1]
        outside = (xs < 0) | (ys < 0) | (xs >= width) | (ys >= height)
        return bool(outside.any())
    return False
