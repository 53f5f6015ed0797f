"""Photo analysis through the API: verdicts on the fixture set, group photos, EXIF rotation, the report."""

from __future__ import annotations

import io
import uuid
from typing import Any

from PIL import Image, ImageEnhance, ImageFilter

from app.db import Subject
from app.subjects.report import build_report
from tests.helpers import fixture_bytes, wait_until_reviewed


def _jpeg(img: Image.Image, **save: Any) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=95, **save)
    return out.getvalue()


def _open(name: str) -> Image.Image:
    return Image.open(io.BytesIO(fixture_bytes(name))).convert("RGB")


def _upload(client: Any, account: Any, subject_id: str, files: list[tuple[str, bytes]]) -> dict:
    response = client.post(
        f"/v1/subjects/{subject_id}/photos",
        headers=account.headers,
        files=[("files", (name, data, "application/octet-stream")) for name, data in files],
    )
    assert response.status_code == 202, response.text
    return response.json()


def _new_subject(client: Any, account: Any, name: str = "Barack") -> str:
    response = client.post(
        "/v1/subjects", json={"name": name, "class_word": "man", "consent": True}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _codes(photo: dict) -> list[str]:
    return [r["code"] for r in photo["reasons"]]


FIXTURE_SET = [
    "obama.jpg",
    "obama2.jpg",
    "obama3.jpg",
    "obama_rgba.png",
    "biden.jpg",
    "chelsea.png",
    "coffee.png",
    "obama_partial_face.jpg",
    "obama_partial_face2.jpg",
]


def test_fixture_set_is_judged_as_one_person(client: Any, account: Any, subject: dict, db: Any) -> None:
    files = [(name, fixture_bytes(name)) for name in FIXTURE_SET]
    files.append(("obama3_blurred.jpg", _jpeg(_open("obama3.jpg").filter(ImageFilter.GaussianBlur(6)))))
    files.append(("obama3_dark.jpg", _jpeg(ImageEnhance.Brightness(_open("obama3.jpg")).enhance(0.25))))
    _upload(client, account, subject["id"], files)
    done = wait_until_reviewed(client, account, subject["id"], len(files))
    photos, report = done["photos"], done["report"]

    # The obama portraits and the RGBA one are one identity.
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "obama_rgba.png"):
        assert photos[name]["identity_distance"] < 0.6, name
        assert "different_person" not in _codes(photos[name]), name
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg"):
        assert photos[name]["verdict"] == "accepted", (name, photos[name]["reasons"])
        assert photos[name]["selected"] is True
        assert photos[name]["face_count"] == 1 and photos[name]["urls"]["crop"]
    # obama_rgba.png is obama2.jpg with an alpha channel: the same picture, so one copy is used.
    assert photos["obama_rgba.png"]["duplicate_of"] == photos["obama2.jpg"]["id"]
    assert photos["obama_rgba.png"]["selected"] is False

    biden = photos["biden.jpg"]
    assert biden["verdict"] == "rejected" and _codes(biden) == ["different_person"]
    assert biden["identity_distance"] >= 0.6 and biden["reasons"][0]["distance"] == biden["identity_distance"]

    for name in ("chelsea.png", "coffee.png"):
        assert (photos[name]["verdict"], _codes(photos[name]), photos[name]["face_count"]) == (
            "rejected",
            ["no_face"],
            0,
        )
        assert "crop" not in photos[name]["urls"]

    for name in ("obama_partial_face.jpg", "obama_partial_face2.jpg"):
        partial = photos[name]
        assert "face_cut_off" in _codes(partial) and partial["duplicate_of"] == photos["obama.jpg"]["id"]

    assert "too_blurry" in _codes(photos["obama3_blurred.jpg"])
    assert "too_dark" in _codes(photos["obama3_dark.jpg"])
    # Copies of obama3.jpg that are worse point at it.
    assert photos["obama3_blurred.jpg"]["duplicate_of"] == photos["obama3.jpg"]["id"]
    assert photos["obama3_dark.jpg"]["duplicate_of"] == photos["obama3.jpg"]["id"]

    # The report adds it up.
    assert report["ready_to_train"] is False
    assert report["photos"]["usable"] == 3 and report["photos"]["selected"] == 3
    assert report["photos"]["total"] == len(files) and report["photos"]["pending"] == 0
    assert [p["code"] for p in report["problems"]] == ["not_enough_photos"]
    assert report["rejected_by_reason"]["no_face"] == 2
    assert report["rejected_by_reason"]["different_person"] == 1
    assert report["by_shot"] == {"close_up": 1, "half_body": 1, "full_body": 1}
    assert report["identity"]["matching"] >= 7
    advice = {a["code"] for a in report["advice"]}
    assert {"add_photos", "remove_other_people", "vary_photos"} <= advice

    # The same photos, with a lower bar for "ready", are ready to train.
    row = db.get(Subject, uuid.UUID(subject["id"]))
    lower = client.app.state.settings.model_copy(update={"min_training_photos": 3})
    assert build_report(db, subject=row, settings=lower).ready_to_train is True


def test_excluding_a_photo_updates_selection_and_report(client: Any, account: Any, subject: dict) -> None:
    names = ["obama.jpg", "obama2.jpg", "obama3.jpg"]
    _upload(client, account, subject["id"], [(n, fixture_bytes(n)) for n in names])
    photos = wait_until_reviewed(client, account, subject["id"], 3)["photos"]
    target = photos["obama2.jpg"]
    url = f"/v1/subjects/{subject['id']}/photos/{target['id']}"

    response = client.patch(url, json={"excluded": True}, headers=account.headers)
    assert response.status_code == 200, response.text
    assert (response.json()["excluded"], response.json()["selected"]) == (True, False)
    report = client.get(f"/v1/subjects/{subject['id']}/report", headers=account.headers).json()
    assert (report["photos"]["usable"], report["photos"]["selected"], report["photos"]["excluded"]) == (2, 2, 1)

    response = client.patch(url, json={"excluded": False}, headers=account.headers)
    assert response.json()["selected"] is True
    client.delete(f"/v1/subjects/{subject['id']}/photos/{photos['obama3.jpg']['id']}", headers=account.headers)
    report = client.get(f"/v1/subjects/{subject['id']}/report", headers=account.headers).json()
    assert (report["photos"]["total"], report["photos"]["usable"]) == (2, 2)


def test_group_photo_keeps_the_subjects_face(client: Any, account: Any, subject: dict) -> None:
    """biden's face is the larger one, so analysis first crops it; the review sends the photo back for obama's."""
    left, right = _open("biden.jpg"), _open("obama2.jpg")
    group = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), "white")
    group.paste(left, (0, 0))
    group.paste(right, (left.width, 0))
    files = [(n, fixture_bytes(n)) for n in ("obama.jpg", "obama3.jpg")] + [("group.jpg", _jpeg(group))]
    _upload(client, account, subject["id"], files)
    photos = wait_until_reviewed(client, account, subject["id"], 3)["photos"]

    photo = photos["group.jpg"]
    assert photo["face_count"] == 2
    assert (photo["verdict"], _codes(photo)) == ("warning", ["multiple_faces"])
    assert photo["face_box"][0] >= left.width  # obama's half
    assert photo["identity_distance"] < 0.6 and photo["selected"] is True
    assert photo["crop_box"][2] > left.width
    crop = client.get(photo["urls"]["crop"], headers=account.headers)
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg"


def test_group_photo_of_strangers_is_rejected(client: Any, account: Any, subject: dict) -> None:
    left, right = _open("biden.jpg"), _open("biden.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    group = Image.new("RGB", (left.width * 2, left.height), "white")
    group.paste(left, (0, 0))
    group.paste(right, (left.width, 0))
    files = [(n, fixture_bytes(n)) for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")] + [("group.jpg", _jpeg(group))]
    _upload(client, account, subject["id"], files)
    photo = wait_until_reviewed(client, account, subject["id"], 4)["photos"]["group.jpg"]
    assert photo["verdict"] == "rejected"
    assert set(_codes(photo)) == {"multiple_faces", "different_person"}


def test_photo_rotated_by_exif_is_analysed_upright(client: Any, account: Any, subject: dict) -> None:
    """Pixels stored sideways with an orientation tag: the face is found in the upright image."""
    upright = _open("obama2.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the pixels are stored turned the other way
    sideways = _jpeg(upright.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())
    _upload(client, account, subject["id"], [("sideways.jpg", sideways)])
    photo = wait_until_reviewed(client, account, subject["id"], 1)["photos"]["sideways.jpg"]
    assert (photo["width"], photo["height"]) == upright.size
    assert photo["face_count"] == 1 and photo["pose"] == "three_quarter" and photo["shot"] == "close_up"
    assert photo["verdict"] == "accepted"


def test_report_of_an_empty_and_of_anothers_subject(client: Any, account: Any, make_account: Any) -> None:
    subject_id = _new_subject(client, account)
    report = client.get(f"/v1/subjects/{subject_id}/report", headers=account.headers)
    assert report.status_code == 200
    body = report.json()
    assert body["ready_to_train"] is False and body["photos"]["total"] == 0
    assert [p["code"] for p in body["problems"]] == ["not_enough_photos"]

    stranger = make_account()
    response = client.get(f"/v1/subjects/{subject_id}/report", headers=stranger.headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "subject_not_found"


def test_report_says_when_analysis_is_still_running(client: Any, account: Any, subject: dict, db: Any) -> None:
    """Photos still pending block training and are counted."""
    from app.core.ids import new_id
    from app.db import Photo
    from app.db.base import utcnow

    row = db.get(Subject, uuid.UUID(subject["id"]))
    db.add(
        Photo(
            id=new_id(),
            user_id=row.user_id,
            subject_id=row.id,
            filename="waiting.jpg",
            source_format="JPEG",
            stored_ext="jpg",
            size_bytes=1,
            sha256="0" * 64,
            reasons=[],
            created_at=utcnow(),
        )
    )
    db.commit()
    body = client.get(f"/v1/subjects/{subject['id']}/report", headers=account.headers).json()
    assert body["photos"]["pending"] == 1
    assert "analysis_in_progress" in [p["code"] for p in body["problems"]]
