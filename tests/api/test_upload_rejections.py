"""Bad uploads: each file refused with a clear reason (a bad request: a 4xx in the error shape), nothing stored."""

from __future__ import annotations

import zipfile

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.helpers import fixture_bytes, jpeg_bytes, list_all_photos, png_header_only, wait_until_analyzed, zip_bytes

MiB = 1024 * 1024


def _upload(client, account, subject_id, files):
    return client.post(
        f"/v1/subjects/{subject_id}/photos", files=[("files", f) for f in files], headers=account.headers
    )


# Refusals of the request itself answer an error with this status; a refused file is listed in a 202.
REQUEST_ERRORS = {"no_files": 400, "request_too_large": 413}


def _assert_rejected(response, code, *, storage, account):
    """Nothing stored, and the reason given: as the request's error, or as every file's rejection."""
    if code in REQUEST_ERRORS:
        assert response.status_code == REQUEST_ERRORS[code], response.text
        error = response.json()["error"]
    else:
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["photos"] == [] and body["rejected"], body
        error = body["rejected"][0]["error"]
    assert error["code"] == code
    assert error["message"] and error["hint"]
    assert storage.list(f"users/{account.id}/") == []
    return response.json()


@pytest.fixture
def limited(settings, make_account):
    """An app with small limits, sharing the database, storage and queue of the main one."""
    small = settings.model_copy(
        update={
            "max_file_bytes": 2 * MiB,
            "max_request_bytes": 8 * MiB,
            "max_image_pixels": 4_000_000,
            "zip_max_entries": 5,
            "zip_max_uncompressed_bytes": 3 * MiB,
            "max_photos_per_subject": 3,
        }
    )
    with TestClient(create_app(small)) as client:
        account = make_account()
        subject = client.post("/v1/subjects", json={"name": "L", "consent": True}, headers=account.headers).json()
        yield client, account, subject


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("fake.jpg", b"this is plainly text, not a photo" * 10, "not_an_image"),
        ("truncated.jpg", fixture_bytes("obama.jpg")[:20_000], "corrupt_image"),
        (
            "anim.gif",
            b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
            b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;",
            "unsupported_format",
        ),
        ("bomb.png", png_header_only(50_000, 50_000), "image_too_large"),
        ("tiny.jpg", jpeg_bytes(20, 20), "image_too_small"),
        ("empty.jpg", b"", "empty_file"),
        ("broken.zip", b"PK\x03\x04" + b"\x00" * 100, "invalid_archive"),
    ],
)
def test_bad_single_file(client, account, subject, storage, name, data, code):
    """A single bad file is listed as rejected with a fitting code, in the same 202 shape as any upload."""
    response = _upload(client, account, subject["id"], [(name, data)])
    body = _assert_rejected(response, code, storage=storage, account=account)
    assert body["rejected"][0]["filename"] == name


@pytest.mark.parametrize(
    ("entries", "symlinks", "code"),
    [
        ({"../escape.jpg": jpeg_bytes()}, None, "unsafe_archive"),
        ({"ok/../../escape.jpg": jpeg_bytes()}, None, "unsafe_archive"),
        ({"/etc/passwd.jpg": jpeg_bytes()}, None, "unsafe_archive"),
        ({"C:/windows/x.jpg": jpeg_bytes()}, None, "unsafe_archive"),
        ({"a.jpg": jpeg_bytes()}, {"link.jpg": "/etc/passwd"}, "unsafe_archive"),
        ({"a.jpg": jpeg_bytes(), "inner.zip": zip_bytes({"b.jpg": jpeg_bytes()})}, None, "nested_archive"),
        ({"a.jpg": jpeg_bytes(), "disguised.jpg": zip_bytes({"b.jpg": jpeg_bytes()})}, None, "nested_archive"),
    ],
)
def test_unsafe_archives_are_refused_whole(client, account, subject, storage, entries, symlinks, code):
    """Traversal, absolute paths, symlinks and nested archives reject the whole zip, good entries included."""
    response = _upload(client, account, subject["id"], [("evil.zip", zip_bytes(entries, symlinks=symlinks))])
    _assert_rejected(response, code, storage=storage, account=account)


def test_one_bad_file_does_not_sink_the_batch(client, account, subject, storage):
    """Good files are accepted and each bad one is listed with its reason."""
    response = _upload(
        client,
        account,
        subject["id"],
        [
            ("good.jpg", jpeg_bytes()),
            ("fake.jpg", b"not an image at all"),
            ("evil.zip", zip_bytes({"../x.jpg": jpeg_bytes()})),
            ("also-good.png", fixture_bytes("chelsea.png")),
        ],
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert [p["filename"] for p in body["photos"]] == ["good.jpg", "also-good.png"]
    assert [(r["filename"], r["error"]["code"]) for r in body["rejected"]] == [
        ("fake.jpg", "not_an_image"),
        ("evil.zip", "unsafe_archive"),
    ]
    originals = [k for k in storage.list(f"users/{account.id}/") if "/original." in k]
    assert len(originals) == 2


def test_a_bad_entry_inside_a_zip_is_listed_alone(client, account, subject):
    """A non-image inside an otherwise good zip is rejected by its path in the archive."""
    archive = zip_bytes({"a.jpg": jpeg_bytes(), "notes.pdf": b"%PDF-1.4 not a photo"})
    body = _upload(client, account, subject["id"], [("set.zip", archive)]).json()
    assert [p["filename"] for p in body["photos"]] == ["set.zip/a.jpg"]
    assert [(r["filename"], r["error"]["code"]) for r in body["rejected"]] == [("set.zip/notes.pdf", "not_an_image")]


def test_empty_request(client, account, subject, storage):
    """A request with no files at all says what to send."""
    response = client.post(f"/v1/subjects/{subject['id']}/photos", headers=account.headers)
    _assert_rejected(response, "no_files", storage=storage, account=account)


def test_file_over_the_size_limit(limited, storage):
    client, account, subject = limited
    response = _upload(client, account, subject["id"], [("huge.jpg", jpeg_bytes(64, 64) + b"\x00" * (3 * MiB))])
    _assert_rejected(response, "file_too_large", storage=storage, account=account)


def test_request_over_the_size_limit_is_refused_before_reading(limited, storage):
    client, account, subject = limited
    files = [(f"{i}.jpg", b"\xff\xd8" + bytes([i]) * (MiB + i)) for i in range(9)]
    response = _upload(client, account, subject["id"], files)
    _assert_rejected(response, "request_too_large", storage=storage, account=account)


def test_zip_with_too_many_entries(limited, storage):
    client, account, subject = limited
    archive = zip_bytes({f"{i}.txt": b"x" for i in range(6)})
    _assert_rejected(
        _upload(client, account, subject["id"], [("many.zip", archive)]),
        "archive_too_many_entries",
        storage=storage,
        account=account,
    )


def test_zip_bomb_is_stopped_by_bytes_actually_unpacked(limited, storage):
    """Entries that each pass the per-file limit but together unpack past the archive limit."""
    client, account, subject = limited
    archive = zip_bytes({f"{i}.jpg": b"\x00" * (MiB + MiB // 2) for i in range(3)})
    assert len(archive) < 50_000
    _assert_rejected(
        _upload(client, account, subject["id"], [("bomb.zip", archive)]),
        "archive_too_large",
        storage=storage,
        account=account,
    )


def test_zip_entry_lying_about_its_size(limited, storage):
    """The limit counts bytes read, not the sizes the archive's headers claim."""
    client, account, subject = limited
    archive = bytearray(zip_bytes({"big.jpg": b"\x00" * (10 * MiB)}))
    with zipfile.ZipFile(__import__("io").BytesIO(bytes(archive))) as zf:
        info = zf.infolist()[0]
    declared = (10 * MiB).to_bytes(4, "little")
    tiny = (100).to_bytes(4, "little")
    archive = bytes(archive).replace(declared, tiny)  # both headers now claim 100 bytes
    assert info.file_size == 10 * MiB
    response = _upload(client, account, subject["id"], [("liar.zip", archive)])
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["photos"] == []
    assert body["rejected"][0]["error"]["code"] in ("file_too_large", "corrupt_archive_entry", "archive_too_large")
    assert storage.list(f"users/{account.id}/") == []


def test_subject_photo_limit(limited):
    client, account, subject = limited
    files = [(f"{i}.jpg", jpeg_bytes(color=(i * 50, 40, 90))) for i in range(5)]
    body = _upload(client, account, subject["id"], files).json()
    assert len(body["photos"]) == 3
    assert [r["error"]["code"] for r in body["rejected"]] == ["subject_full", "subject_full"]


def test_another_users_subject_is_not_found(client, account, subject, make_account, storage):
    """Uploading into someone else's subject answers 404, as if it did not exist."""
    stranger = make_account()
    response = _upload(client, stranger, subject["id"], [("a.jpg", jpeg_bytes())])
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "subject_not_found"
    assert storage.list(f"users/{stranger.id}/") == [] and storage.list(f"users/{account.id}/") == []


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer lk_nope"}, {"Authorization": "Basic abc"}])
def test_upload_needs_a_valid_key(client, subject, headers, storage, account):
    response = client.post(
        f"/v1/subjects/{subject['id']}/photos", files=[("files", ("a.jpg", jpeg_bytes()))], headers=headers
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")
    assert storage.list(f"users/{account.id}/") == []


def test_rejected_uploads_leave_existing_photos_alone(client, account, subject, storage):
    """A failed upload does not disturb what was stored before."""
    ok = _upload(client, account, subject["id"], [("keep.jpg", jpeg_bytes())])
    assert ok.status_code == 202
    wait_until_analyzed(client, account, subject["id"], 1)
    before = storage.list(f"users/{account.id}/")
    bad = _upload(client, account, subject["id"], [("evil.zip", zip_bytes({"../x.jpg": jpeg_bytes()}))])
    assert bad.status_code == 202 and bad.json()["rejected"][0]["error"]["code"] == "unsafe_archive"
    assert storage.list(f"users/{account.id}/") == before
    assert [p["filename"] for p in list_all_photos(client, account, subject["id"])] == ["keep.jpg"]
