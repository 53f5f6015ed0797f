"""`analyze_image` on the fixture photos and on damaged copies of them: no database involved."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from tests.helpers import fixture_bytes
from worker.analysis import faces as face_lib
from worker.analysis.framing import BUCKETS
from worker.analysis.pipeline import Analysis, analyze_image


def _jpeg(img: Image.Image, quality: int = 95) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def _open(name: str) -> Image.Image:
    return Image.open(io.BytesIO(fixture_bytes(name))).convert("RGB")


def _codes(result: Analysis) -> list[str]:
    return [r["code"] for r in result.reasons]


@pytest.fixture(scope="module")
def analysed() -> dict[str, Analysis]:
    names = [
        "obama.jpg",
        "obama2.jpg",
        "obama3.jpg",
        "obama_rgba.png",
        "biden.jpg",
        "obama_partial_face.jpg",
        "obama_partial_face2.jpg",
        "chelsea.png",
        "coffee.png",
    ]
    return {name: analyze_image(fixture_bytes(name), class_word="man") for name in names}


@pytest.mark.parametrize(
    ("name", "pose", "shot"),
    [
        ("obama.jpg", "frontal", "half_body"),
        ("obama2.jpg", "three_quarter", "close_up"),
        ("obama3.jpg", "frontal", "full_body"),  # the README's full-length shot
        ("obama_rgba.png", "three_quarter", "close_up"),
        ("biden.jpg", "frontal", "half_body"),
    ],
)
def test_portraits_are_clean_with_pose_and_shot(analysed: dict[str, Analysis], name: str, pose: str, shot: str) -> None:
    result = analysed[name]
    assert result.face_count == 1
    assert result.reasons == [], result.reasons
    assert (result.pose, result.shot) == (pose, shot)
    assert result.encodings is not None and result.encodings.shape == (1, 128)
    assert result.face_box is not None and result.crop is not None
    left, top, right, bottom = result.face_box
    assert 0 <= left < right <= result.width and 0 <= top < bottom <= result.height
    assert 0.0 < (result.quality or 0) <= 1.0


def test_one_identity_and_another_person(analysed: dict[str, Analysis]) -> None:
    """The obama photos are within 0.6 of each other; biden is far from all of them."""
    obama = [analysed[n].encodings[0] for n in ("obama.jpg", "obama2.jpg", "obama3.jpg", "obama_rgba.png")]
    biden = analysed["biden.jpg"].encodings[0]
    for i, a in enumerate(obama):
        assert all(np.linalg.norm(a - b) < 0.5 for b in obama[i + 1 :])
        assert np.linalg.norm(a - biden) > 0.7


@pytest.mark.parametrize("name", ["chelsea.png", "coffee.png"])
def test_no_face_is_rejected(analysed: dict[str, Analysis], name: str) -> None:
    result = analysed[name]
    assert (result.face_count, _codes(result)) == (0, ["no_face"])
    assert result.auto_caption is None  # never trained on, so no caption
    assert result.crop is None and result.encodings is None and result.thumb


@pytest.mark.parametrize("name", ["obama_partial_face.jpg", "obama_partial_face2.jpg"])
def test_partial_crops_are_warned_as_cut_off(analysed: dict[str, Analysis], name: str) -> None:
    assert _codes(analysed[name]) == ["face_cut_off"]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda im: im.filter(ImageFilter.GaussianBlur(2)), "blurry"),
        (lambda im: im.filter(ImageFilter.GaussianBlur(5)), "too_blurry"),
        (lambda im: ImageEnhance.Brightness(im).enhance(0.3), "too_dark"),
        (lambda im: ImageEnhance.Brightness(im).enhance(2.2), "overexposed"),
        (lambda im: ImageOps.grayscale(im), "black_and_white"),
        (lambda im: im.resize((im.width // 4, im.height // 4)), "low_resolution"),
        (lambda im: im.resize((im.width // 6, im.height // 6)), "face_too_small"),
    ],
    ids=["blur", "heavy-blur", "dark", "bright", "grey", "small", "tiny"],
)
def test_damaged_copies_get_the_matching_reason(damage, expected: str) -> None:
    result = analyze_image(_jpeg(damage(_open("obama.jpg"))))
    assert result.face_count == 1
    assert _codes(result) == [expected]


def test_sharp_but_dim_photo_is_not_called_blurry() -> None:
    """Sharpness is measured relative to the face's contrast, so darkness alone is not blur."""
    result = analyze_image(_jpeg(ImageEnhance.Brightness(_open("obama.jpg")).enhance(0.45)))
    assert "blurry" not in _codes(result) and "too_blurry" not in _codes(result)


def test_group_photo_keeps_the_face_that_matches_the_identity(analysed: dict[str, Analysis]) -> None:
    left, right = _open("biden.jpg"), _open("obama3.jpg")
    group = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), "white")
    group.paste(left, (0, 0))
    group.paste(right, (left.width, 0))
    data = _jpeg(group)

    identity = analysed["obama.jpg"].encodings[0]
    result = analyze_image(data, identity=identity)
    assert result.face_count == 2
    assert _codes(result) == ["multiple_faces"]
    assert result.face_box[0] >= left.width  # obama's side
    chosen = result.faces[result.face_index]
    assert np.linalg.norm(result.encodings[chosen["encoding"]] - identity) < 0.6

    someone_else = analyze_image(data, identity=analysed["biden.jpg"].encodings[0])
    assert someone_else.face_box[2] <= left.width  # biden's side


def test_crops_follow_the_shot_and_fit_a_bucket(analysed: dict[str, Analysis]) -> None:
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"):
        result = analysed[name]
        cl, ct, cr, cb = result.crop_box
        fl, ft, fr, fb = result.face_box
        assert cl <= fl and ct <= ft and cr >= fr and cb >= fb, name  # the face is inside the crop
        assert min(abs((cr - cl) / (cb - ct) - a) for a in BUCKETS) < 0.02, name
        sl, st, sr, sb = result.square_box
        assert abs((sr - sl) - (sb - st)) <= 1
        with Image.open(io.BytesIO(result.crop)) as crop:
            assert crop.format == "JPEG"
            assert abs(crop.width / crop.height - (cr - cl) / (cb - ct)) < 0.01
    full = analysed["obama3.jpg"]
    # The full-body crop reaches far below the face; the close-up one stays near it.
    assert full.crop_box[3] - full.face_box[3] > 5 * (full.face_box[3] - full.face_box[1])
    close = analysed["obama2.jpg"]
    assert close.crop_box[3] - close.face_box[3] < 3 * (close.face_box[3] - close.face_box[1])


def test_caption_template(analysed: dict[str, Analysis]) -> None:
    assert analysed["obama2.jpg"].auto_caption == "photo of {trigger} man, close-up, three-quarter view"
    assert analysed["obama3.jpg"].auto_caption == "photo of {trigger} man, full-body shot, looking at the camera"


def test_twelve_megapixel_copy_finds_the_same_face() -> None:
    """Decoding at a reduced DCT scale loses nothing the analysis needs."""
    small = _open("obama2.jpg")
    factor = math.sqrt(12e6 / (small.width * small.height))
    big = small.resize((round(small.width * factor), round(small.height * factor)), Image.Resampling.BICUBIC)
    a, b = analyze_image(_jpeg(small)), analyze_image(_jpeg(big, quality=92))
    assert (b.width, b.height) == big.size
    assert (b.face_count, b.pose, b.shot, _codes(b)) == (a.face_count, a.pose, a.shot, _codes(a))
    assert np.linalg.norm(a.encodings[0] - b.encodings[0]) < 0.1
    scaled = [v * factor for v in a.face_box]
    assert all(abs(x - y) < 0.06 * (b.face_box[2] - b.face_box[0]) for x, y in zip(scaled, b.face_box, strict=True))


@pytest.mark.parametrize(("name", "angle"), [("obama.jpg", 55), ("obama2.jpg", -55), ("obama3.jpg", 70)])
def test_a_tilted_head_is_found_on_a_turned_copy_and_described_upright(
    name: str, angle: int, analysed: dict[str, Analysis]
) -> None:
    """A head tilted 55-70 degrees is outside what HOG finds; HOG on a turned copy finds it.

    Its landmarks and chip are taken on the decoded image turned the same way, so the
    identity and the pose are those of the upright photo, and the box is where the face is.
    (The fixtures hold no true profile shot; a tilt puts the face in HOG's blind spot too.)
    """
    upright = _open(name)
    tilted = upright.rotate(angle, expand=True, fillcolor="white")
    rgb = np.asarray(tilted)
    models = face_lib.FaceModels.get()
    assert list(models.hog(rgb, 0)) == [] and list(models.hog(rgb, 1)) == []

    result = analyze_image(_jpeg(tilted), class_word="man")
    before = analysed[name]
    assert result.face_count == 1 and [f["detector"] for f in result.faces] == ["hog_rotated"]
    assert np.linalg.norm(result.encodings[0] - before.encodings[0]) < 0.2
    assert result.pose == before.pose
    left, top, right, bottom = before.face_box
    want = face_lib.Turn(upright, angle)
    x, y = want.forward((left + right) / 2, (top + bottom) / 2)
    got_x, got_y = (result.face_box[0] + result.face_box[2]) / 2, (result.face_box[1] + result.face_box[3]) / 2
    assert math.hypot(got_x - x, got_y - y) < 0.2 * (right - left)


def test_turn_maps_points_there_and_back() -> None:
    turn = face_lib.Turn(Image.new("RGB", (640, 427)), 40.0)
    turned = turn.image
    for point in [(0.0, 0.0), (639.0, 0.0), (320.0, 213.5), (17.0, 400.0)]:
        there = turn.forward(*point)
        assert 0 <= there[0] <= turned.width and 0 <= there[1] <= turned.height
        assert np.allclose(turn.back(*there), point, atol=1e-6)
    assert np.allclose(turn.forward(320, 213.5), (turned.width / 2, turned.height / 2))


def test_the_cnn_stage_finds_a_large_face_at_its_small_size() -> None:
    """The last resort (profiles and other poses HOG does not know) still works at CNN_SIDE."""
    rgb = np.asarray(_open("obama2.jpg"))
    tiny, _ = face_lib._resized(rgb, face_lib.CNN_SIDE)
    found = [d for d in face_lib.FaceModels.get().cnn(tiny, 0) if d.confidence > 0.3]
    assert len(found) == 1


@pytest.mark.parametrize("name", ["chelsea.png", "coffee.png"])
def test_a_photo_without_a_face_goes_through_every_stage_and_finds_none(name: str) -> None:
    result = analyze_image(_jpeg(_open(name)))
    assert result.face_count == 0 and _codes(result) == ["no_face"]
