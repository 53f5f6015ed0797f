"""Faces in a photo: dlib's detectors, landmarks and 128-d identity encodings.

The naive use of face_recognition decodes the full image and runs the HOG detector on it
upsampled once, which costs seconds on a 12-megapixel photo. Here detection is a cascade,
cheapest first, that stops at the first stage that finds a face:

1. HOG on a copy whose longest side is `DETECT_SIDE` (about 0.02 s);
2. the same with one upsampling, for faces too small for that copy (full-body shots);
3. HOG on that copy turned by each of `ROTATIONS`: HOG finds heads tilted up to about 30
   degrees, these copies cover tilts up to about 80 (0.1 s for both);
4. dlib's CNN detector on a copy whose longest side is `CNN_SIDE`, for large faces in poses
   HOG does not know (profiles). It is the costly stage (about 0.2 s at that size, against
   1 s at 480 px), and the one a photo without a face always reaches.

Landmarks and encodings are taken on the larger decoded image, so small faces keep their
detail; a face found on a turned copy is described on the decoded image turned the same way,
so its landmarks and its aligned chip are those of an upright face.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

DETECT_SIDE = 640  # HOG on this copy finds faces down to ~80 px, i.e. 1/8 of the long side
ROTATIONS = (40.0, -40.0)  # degrees counter-clockwise; with HOG's own ~30 degrees, tilts up to ~80
CNN_SIDE = 240  # faces down to ~1/3 of the long side; ~0.2 s on one core (1 s at 480)
MAX_ENCODED = 4  # group photos: encode the largest faces only
MIN_RELATIVE_SIZE = 0.35  # faces smaller than this share of the largest are background


@dataclass
class Face:
    """One detected face, in the coordinates of the image given to `find_faces`."""

    box: tuple[int, int, int, int]  # left, top, right, bottom; may reach past the border
    detector: str  # hog | hog_upsampled | hog_rotated | cnn
    angle: float = 0.0  # degrees counter-clockwise that turn the image so that this face is upright
    landmarks: np.ndarray | None = None  # 68 x 2 (x, y)
    upright_landmarks: np.ndarray | None = None  # the same on the turned image (`angle`): for the pose
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
    """dlib's models, each loaded once per process on first use (never at import time).

    HOG is built in and instant; the others are read from face_recognition_models' files (the
    68-point landmarks alone take half a second), so a process that only ever looks for faces in
    images without any (the assessment of a tiny test model) never pays for them.
    """

    _lock = threading.Lock()
    _instance: FaceModels | None = None

    def __init__(self) -> None:
        import dlib

        self.dlib = dlib
        self.hog = dlib.get_frontal_face_detector()

    @classmethod
    def get(cls) -> FaceModels:
        with cls._lock:
            if cls._instance is None:
                cls._instance = FaceModels()
            return cls._instance

    def load_all(self) -> FaceModels:
        """Read every model now (a benchmark's warm-up, so that no timing includes it)."""
        for name in ("cnn", "landmarks68", "landmarks5", "encoder"):
            getattr(self, name)
        return self

    def _load(self, name: str, make: Callable[[Any], object]) -> Any:
        with self._lock:
            if name not in self.__dict__:
                import face_recognition_models

                self.__dict__[name] = make(face_recognition_models)
            return self.__dict__[name]

    @property
    def cnn(self) -> Any:
        return self._load("_cnn", lambda m: self.dlib.cnn_face_detection_model_v1(m.cnn_face_detector_model_location()))

    @property
    def landmarks68(self) -> Any:
        return self._load("_landmarks68", lambda m: self.dlib.shape_predictor(m.pose_predictor_model_location()))

    @property
    def landmarks5(self) -> Any:
        return self._load(
            "_landmarks5", lambda m: self.dlib.shape_predictor(m.pose_predictor_five_point_model_location())
        )

    @property
    def encoder(self) -> Any:
        return self._load(
            "_encoder", lambda m: self.dlib.face_recognition_model_v1(m.face_recognition_model_location())
        )


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


class Turn:
    """`img` turned by `angle` degrees counter-clockwise (PIL's `rotate`, expand=True), and points mapped both ways."""

    def __init__(self, img: Image.Image, angle: float) -> None:
        self.angle = angle
        rad = math.radians(angle)
        self.cos, self.sin = math.cos(rad), math.sin(rad)
        self.centre = (img.width / 2, img.height / 2)
        self.image = img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
        self.turned_centre = (self.image.width / 2, self.image.height / 2)  # PIL rounds the size: use its own

    def forward(self, x: float, y: float) -> tuple[float, float]:
        """A point of the original image in the turned one."""
        dx, dy = x - self.centre[0], y - self.centre[1]
        return (
            dx * self.cos + dy * self.sin + self.turned_centre[0],
            -dx * self.sin + dy * self.cos + self.turned_centre[1],
        )

    def back(self, x: float, y: float) -> tuple[float, float]:
        """A point of the turned image in the original one."""
        dx, dy = x - self.turned_centre[0], y - self.turned_centre[1]
        return (dx * self.cos - dy * self.sin + self.centre[0], dx * self.sin + dy * self.cos + self.centre[1])


def _square_at(centre: tuple[float, float], width: float, height: float) -> tuple[int, int, int, int]:
    x, y = centre
    return (round(x - width / 2), round(y - height / 2), round(x + width / 2), round(y + height / 2))


def _turned_faces(small: Image.Image, factor: float, models: FaceModels) -> list[Face]:
    """HOG on copies of `small` turned by each of ROTATIONS; boxes come back upright-sized, centred on the face."""
    for angle in ROTATIONS:
        turn = Turn(small, angle)
        found = models.hog(np.asarray(turn.image), 0)
        if found:
            return [
                Face(
                    _square_at(
                        tuple(v * factor for v in turn.back(r.center().x, r.center().y)),  # type: ignore[arg-type]
                        r.width() * factor,
                        r.height() * factor,
                    ),
                    "hog_rotated",
                    angle=angle,
                )
                for r in found
            ]
    return []


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
    if not faces:
        faces = _turned_faces(Image.fromarray(small), factor, models)
    if not faces and cnn_fallback:
        tiny, cnn_factor = _resized(small, CNN_SIDE)  # from the detection copy: a cheaper resize
        cnn_factor *= factor
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
    turned: dict[float, tuple[Turn, np.ndarray]] = {}
    for index, face in enumerate(faces):
        image, rect, turn = rgb, dlib.rectangle(*face.box), None
        if face.angle:
            if face.angle not in turned:
                turn = Turn(Image.fromarray(rgb), face.angle)
                turned[face.angle] = (turn, np.asarray(turn.image))
            turn, image = turned[face.angle]
            centre = turn.forward((face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2)
            rect = dlib.rectangle(*_square_at(centre, face.width, face.height))
        shape = models.landmarks68(image, rect)
        face.upright_landmarks = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        if turn is None:
            face.landmarks = face.upright_landmarks
        else:
            face.landmarks = np.array([turn.back(x, y) for x, y in face.upright_landmarks], dtype=np.float32)
        if index < MAX_ENCODED and face.width >= MIN_RELATIVE_SIZE * largest:
            five = models.landmarks5(image, rect)
            chip = dlib.get_face_chip(image, five, size=150, padding=0.25)
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
