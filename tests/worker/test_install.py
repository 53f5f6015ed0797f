"""The worker's ML stack is installed by the project's own files and works offline."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.helpers import FIXTURES


def test_face_recognition_finds_and_encodes_a_face():
    """dlib (from dlib-bin) and face_recognition's bundled models load and see the fixture's face."""
    import face_recognition

    image = np.asarray(Image.open(FIXTURES / "obama.jpg").convert("RGB"))
    boxes = face_recognition.face_locations(image)
    assert len(boxes) == 1
    (encoding,) = face_recognition.face_encodings(image, boxes)
    assert encoding.shape == (128,)


def test_torch_is_the_pinned_cpu_build():
    """torch is pinned so that a fresh install takes the CPU wheel, not gigabytes of CUDA."""
    import diffusers
    import peft
    import torch

    assert torch.__version__.startswith("2.13.0")
    assert diffusers.__version__ and peft.__version__
    assert torch.ones(2).sum().item() == 2.0
