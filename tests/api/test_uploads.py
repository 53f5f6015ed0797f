"""Uploading photos: formats, archives with captions, metadata stripping, orientation, the queue."""

from __future__ import annotations

import io

import pillow_heif
from PIL import Image, ImageOps
from sqlalchemy import select

from app.db import Photo
from tests.helpers import FIXTURES, fixture_bytes, jpeg_bytes, list_all_photos, wait_until_analyzed, zip_bytes

FACES = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "obama_rgba.png", "chelsea.png"]


def _upload(client, account, subject_id, files):
    return client.post(
        f"/v1/subjects/{subject_id}/photos", files=[("files", f) for f in files], headers=account.headers
    )


def _image(client, account, photo, variant="original"):
    response = client.get(photo["urls"][variant], headers=account.headers)
    assert response.status_code == 200, response.text
    return response


def test_fixture_photos_are_stored_listed_and_analyzed(client, account, subject, storage):
    """Every fixture is accepted, stored under the owner's prefix and measured by the worker."""
    response = _upload(client, account, subject["id"], [(name, fixture_bytes(name)) for name in FACES])
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["rejected"] == []
    assert [p["filename"] for p in body["photos"]] == FACES
    assert {p["status"] for p in body["photos"]} == {"pending"}

    photos = wait_until_analyzed(client, account, subject["id"], len(FACES))
    by_name = {p["filename"]: p for p in photos}
    for name in FACES:
        with Image.open(FIXTURES / name) as src:
            upright = ImageOps.exif_transpose(src)
            assert (by_name[name]["width"], by_name[name]["height"]) == upright.size, name
        assert by_name[name]["status"] == "analyzed"
    assert by_name["obama.jpg"]["format"] == "JPEG"
    assert by_name["obama_rgba.png"]["format"] == "PNG"  # alpha is kept, so PNG
    assert by_name["obama_rgba.png"]["source_format"] == "PNG"

    keys = storage.list(f"users/{account.id}/")
    with_face = [name for name in FACES if name != "chelsea.png"]
    assert len(keys) == 2 * len(FACES) + len(with_face)  # original and thumb; a crop where there is a face
    assert {k.rsplit("/", 1)[1] for k in keys} == {"original.jpg", "original.png", "thumb.jpg", "crop.jpg"}
    assert all(k.startswith(f"users/{account.id}/subjects/{subject['id']}/photos/") for k in keys)

    subject_now = client.get(f"/v1/subjects/{subject['id']}", headers=account.headers).json()
    assert subject_now["photos"] == {"total": len(FACES), "pending": 0, "analyzed": len(FACES), "failed": 0}


def test_zip_with_captions_skips_macos_and_hidden_files(client, account, subject):
    """A zip's photos are accepted with their same-name captions; __MACOSX and dotfiles are ignored."""
    archive = zip_bytes(
        {
            "trip/obama.jpg": fixture_bytes("obama.jpg"),
            "trip/obama.txt": b"  a portrait in a dark suit \n",
            "trip/obama2.jpg": fixture_bytes("obama2.jpg"),
            "__MACOSX/trip/._obama.jpg": b"\x00\x05\x16\x07junk",
            "trip/.DS_Store": b"\x00\x00\x00\x01Bud1",
            "trip/": b"",
        }
    )
    response = _upload(client, account, subject["id"], [("photos.zip", archive)])
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["rejected"] == []
    photos = {p["filename"]: p for p in body["photos"]}
    assert set(photos) == {"photos.zip/trip/obama.jpg", "photos.zip/trip/obama2.jpg"}
    assert photos["photos.zip/trip/obama.jpg"]["caption"] == "a portrait in a dark suit"
    assert photos["photos.zip/trip/obama2.jpg"]["caption"] is None


def test_loose_caption_files_pair_with_their_photo(client, account, subject):
    """A .txt next to a photo in the same request becomes its caption; an orphan caption is reported."""
    response = _upload(
        client,
        account,
        subject["id"],
        [
            ("me.jpg", jpeg_bytes()),
            ("me.txt", b"smiling at the beach"),
            ("nobody.txt", b"lost"),
        ],
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["photos"][0]["caption"] == "smiling at the beach"
    assert [(r["filename"], r["error"]["code"]) for r in body["rejected"]] == [("nobody.txt", "caption_without_image")]


def test_webp_and_heic_are_accepted_by_their_bytes(client, account, subject):
    """WebP and HEIC are recognised from content, whatever their names say."""
    source = Image.open(FIXTURES / "obama2.jpg").convert("RGB")
    webp = io.BytesIO()
    source.save(webp, "WEBP", quality=80)
    heic = io.BytesIO()
    pillow_heif.from_pillow(source).save(heic, quality=80)
    response = _upload(client, account, subject["id"], [("a.webp", webp.getvalue()), ("misnamed.png", heic.getvalue())])
    assert response.status_code == 202, response.text
    formats = {p["filename"]: p["source_format"] for p in response.json()["photos"]}
    assert formats == {"a.webp": "WebP", "misnamed.png": "HEIC"}
    photos = wait_until_analyzed(client, account, subject["id"], 2)
    assert {(p["width"], p["height"]) for p in photos} == {source.size}


def test_metadata_is_stripped_from_everything_stored_and_served(client, account, subject, storage):
    """EXIF (GPS included) and XMP do not survive in the original, the thumbnail or storage."""
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x0131] = "TellTale Editor"  # Software
    gps = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    exif[0x8825] = gps
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">SecretXMP</x:xmpmeta>'
    data = jpeg_bytes(800, 600, exif=exif, xmp=xmp)
    assert b"SecretCam" in data and b"SecretXMP" in data
    response = _upload(client, account, subject["id"], [("gps.jpg", data)])
    assert response.status_code == 202, response.text
    (photo,) = wait_until_analyzed(client, account, subject["id"], 1)
    for variant in ("original", "thumb"):
        served = _image(client, account, photo, variant).content
        assert b"SecretCam" not in served and b"SecretXMP" not in served and b"TellTale" not in served
        with Image.open(io.BytesIO(served)) as img:
            assert not img.getexif()
            assert "xmp" not in img.info and "exif" not in img.info
    for key in storage.list(f"users/{account.id}/"):
        blob = storage.get(key)
        assert b"SecretCam" not in blob and b"SecretXMP" not in blob


def test_exif_orientation_is_applied(client, account, subject):
    """A photo tagged 'rotate 90°' is stored upright, with width and height swapped."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    response = _upload(client, account, subject["id"], [("sideways.jpg", jpeg_bytes(400, 200, exif=exif))])
    assert response.status_code == 202, response.text
    (photo,) = wait_until_analyzed(client, account, subject["id"], 1)
    assert (photo["width"], photo["height"]) == (200, 400)
    with Image.open(io.BytesIO(_image(client, account, photo).content)) as img:
        assert img.size == (200, 400)
        assert img.getexif().get(0x0112) is None
    with Image.open(io.BytesIO(_image(client, account, photo, "thumb").content)) as thumb:
        assert thumb.size[1] > thumb.size[0]


def test_thumbnail_is_small_and_flattened(client, account, subject, settings):
    """Thumbnails fit the configured size and are JPEG even for transparent sources."""
    assert _upload(client, account, subject["id"], [("rgba.png", fixture_bytes("obama_rgba.png"))]).status_code == 202
    (photo,) = wait_until_analyzed(client, account, subject["id"], 1)
    with Image.open(io.BytesIO(_image(client, account, photo, "thumb").content)) as thumb:
        assert thumb.format == "JPEG"
        assert max(thumb.size) == settings.thumb_size


def test_each_accepted_photo_is_sent_to_the_analysis_queue_after_commit(client, account, subject, monkeypatch, db):
    """photos.analyze is sent once per photo, with its id, when the row is already committed."""
    from app.core import queue

    seen = []

    def record(task_name, *args):
        seen.append((task_name, args))
        row = db.scalar(select(Photo).where(Photo.id == __import__("uuid").UUID(args[0])))
        db.rollback()
        assert row is not None, "the task was sent before its row was committed"

    monkeypatch.setattr(queue, "send", record)
    response = _upload(
        client, account, subject["id"], [("a.jpg", jpeg_bytes()), ("b.jpg", jpeg_bytes(color=(1, 2, 3)))]
    )
    ids = [p["id"] for p in response.json()["photos"]]
    assert seen == [("photos.analyze", (ids[0],)), ("photos.analyze", (ids[1],))]


def test_same_file_twice_is_kept_once(client, account, subject):
    """Re-uploading a byte-identical file is reported as a duplicate, not stored again."""
    first = _upload(client, account, subject["id"], [("a.jpg", fixture_bytes("obama.jpg"))])
    assert first.status_code == 202
    again = _upload(client, account, subject["id"], [("copy.jpg", fixture_bytes("obama.jpg")), ("b.jpg", jpeg_bytes())])
    assert again.status_code == 202
    rejected = again.json()["rejected"]
    assert [(r["filename"], r["error"]["code"]) for r in rejected] == [("copy.jpg", "duplicate_file")]
    assert first.json()["photos"][0]["id"] in rejected[0]["error"]["message"]
    assert len(list_all_photos(client, account, subject["id"])) == 2


def test_heic_orientation_is_applied_once(client, account, subject):
    """HEIC decoders rotate by themselves; the photo must not be turned a second time."""
    exif = Image.Exif()
    exif[0x0112] = 6
    heic = io.BytesIO()
    Image.open(io.BytesIO(jpeg_bytes(400, 200))).save(heic, "HEIF", exif=exif.tobytes())
    assert _upload(client, account, subject["id"], [("phone.heic", heic.getvalue())]).status_code == 202
    (photo,) = wait_until_analyzed(client, account, subject["id"], 1)
    assert (photo["width"], photo["height"]) == (200, 400)
