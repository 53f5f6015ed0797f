"""`photos.analyze`: through the queue, called directly, and against S3."""

from __future__ import annotations

import hashlib
import io
import uuid
from typing import Any

import pytest
from PIL import Image, ImageOps

from app.core.db import session_factory
from app.core.ids import new_id
from app.core.keys import photo_key
from app.core.storage import Storage
from app.db import Photo, PhotoStatus, Subject
from app.db.base import utcnow
from tests.helpers import fixture_bytes, jpeg_bytes, png_bytes, wait_until_analyzed
from worker.analysis.tasks import analyze_photo

OBAMA = fixture_bytes("obama.jpg")


def _upright_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return (ImageOps.exif_transpose(img) or img).size


def _insert(
    db: Any,
    storage: Storage,
    account: Any,
    data: bytes | None,
    *,
    ext: str = "jpg",
    status: str = PhotoStatus.pending,
    **values: Any,
) -> Photo:
    """A photo row added directly (so no task is queued for it), its original optionally stored."""
    subject = Subject(
        user_id=account.id, name="Direct", class_word="person", consent_at=utcnow(), consent_version="test"
    )
    db.add(subject)
    db.flush()
    photo = Photo(
        id=new_id(),
        user_id=account.id,
        subject_id=subject.id,
        filename=f"direct.{ext}",
        source_format="JPEG",
        stored_ext=ext,
        size_bytes=len(data or b""),
        sha256=hashlib.sha256(data or b"").hexdigest(),
        status=status,
        reasons=[],
        **values,
    )
    db.add(photo)
    db.commit()
    if data is not None:
        storage.put(photo_key(account.id, subject.id, photo.id, "original", ext), data)
    return photo


def _reload(db: Any, photo_id: uuid.UUID) -> Photo:
    db.rollback()
    row = db.get(Photo, photo_id, populate_existing=True)
    assert row is not None
    return row


def test_upload_is_analyzed_by_worker(client: Any, account: Any, subject: dict, storage: Storage, db: Any) -> None:
    """An uploaded photo is measured by the worker from the stored, upright image."""
    response = client.post(
        f"/v1/subjects/{subject['id']}/photos",
        headers=account.headers,
        files=[("files", ("obama.jpg", OBAMA, "image/jpeg"))],
    )
    assert response.status_code == 202, response.text
    photo_id = response.json()["photos"][0]["id"]

    [photo] = wait_until_analyzed(client, account, subject["id"], 1)
    assert photo["id"] == photo_id
    assert photo["status"] == "analyzed", photo
    assert photo["error"] is None
    stored = storage.get(photo_key(account.id, uuid.UUID(subject["id"]), uuid.UUID(photo_id), "original", "jpg"))
    with Image.open(io.BytesIO(stored)) as img:
        assert (photo["format"], photo["width"], photo["height"]) == (img.format, *img.size)
    assert (photo["width"], photo["height"]) == _upright_size(OBAMA) == (910, 1137)
    assert photo["analyzed_at"] is not None
    assert _reload(db, uuid.UUID(photo_id)).analysis_attempts == 1


@pytest.mark.parametrize(
    ("data", "ext", "expected"),
    [
        (jpeg_bytes(320, 240), "jpg", ("JPEG", 320, 240)),
        (png_bytes(200, 150), "png", ("PNG", 200, 150)),
    ],
)
def test_pending_photo_is_measured(
    settings: Any, storage: Storage, db: Any, account: Any, data: bytes, ext: str, expected: tuple
) -> None:
    """A pending row with its original stored ends analyzed with the image's format and size."""
    photo = _insert(db, storage, account, data, ext=ext)
    assert analyze_photo(photo.id, sessions=session_factory(settings), storage=storage, settings=settings) == "analyzed"
    row = _reload(db, photo.id)
    assert (row.status, row.format, row.width, row.height) == ("analyzed", *expected)
    assert row.error is None and row.analyzed_at is not None
    assert row.analysis_attempts == 1


def test_analyzed_photo_is_left_alone(settings: Any, storage: Storage, db: Any, account: Any) -> None:
    """Running the task again on an analysed photo does nothing and says so."""
    photo = _insert(db, storage, account, jpeg_bytes(100, 80))
    sessions = session_factory(settings)
    assert analyze_photo(photo.id, sessions=sessions, storage=storage, settings=settings) == "analyzed"
    before = _reload(db, photo.id)
    snapshot = (before.status, before.width, before.height, before.analyzed_at, before.analysis_attempts)
    storage.put(photo_key(account.id, photo.subject_id, photo.id, "original", "jpg"), jpeg_bytes(64, 64))

    assert analyze_photo(photo.id, sessions=sessions, storage=storage, settings=settings) == "already analyzed"
    after = _reload(db, photo.id)
    assert (after.status, after.width, after.height, after.analyzed_at, after.analysis_attempts) == snapshot
    assert snapshot[:3] == ("analyzed", 100, 80)


def test_failed_photo_is_left_alone(settings: Any, storage: Storage, db: Any, account: Any) -> None:
    """A failed photo is not retried by a duplicate message."""
    photo = _insert(db, storage, account, jpeg_bytes(), status=PhotoStatus.failed, error="earlier")
    assert (
        analyze_photo(photo.id, sessions=session_factory(settings), storage=storage, settings=settings)
        == "already failed"
    )
    row = _reload(db, photo.id)
    assert (row.status, row.error, row.width, row.analysis_attempts) == ("failed", "earlier", None, 0)


def test_unknown_photo_is_gone(settings: Any, storage: Storage) -> None:
    """A message for a photo deleted before it ran is dropped."""
    assert analyze_photo(uuid.uuid4(), sessions=session_factory(settings), storage=storage, settings=settings) == "gone"


def test_missing_original_fails_with_message(settings: Any, storage: Storage, db: Any, account: Any) -> None:
    """A pending photo whose stored original is gone ends failed with a reason."""
    photo = _insert(db, storage, account, None)
    assert analyze_photo(photo.id, sessions=session_factory(settings), storage=storage, settings=settings) == "failed"
    row = _reload(db, photo.id)
    assert row.status == "failed"
    assert "missing" in (row.error or "")
    assert (row.width, row.height, row.format) == (None, None, None)
    assert row.analysis_attempts == 1 and row.analyzed_at is not None


def test_unreadable_original_fails_with_message(settings: Any, storage: Storage, db: Any, account: Any) -> None:
    """Stored bytes that are not an image end the photo failed, not the worker."""
    photo = _insert(db, storage, account, b"definitely not an image")
    assert analyze_photo(photo.id, sessions=session_factory(settings), storage=storage, settings=settings) == "failed"
    row = _reload(db, photo.id)
    assert row.status == "failed"
    assert "could not be read" in (row.error or "")


def test_concurrent_result_wins(settings: Any, storage: Storage, db: Any, account: Any) -> None:
    """If another run finishes first, this one reports superseded and overwrites nothing."""
    photo = _insert(db, storage, account, jpeg_bytes(120, 90))
    sessions = session_factory(settings)

    class RacingStorage:
        def get(self, key: str) -> bytes:
            with sessions.begin() as other:
                row = other.get(Photo, photo.id)
                row.status, row.width, row.height, row.format = PhotoStatus.analyzed, 1, 2, "OTHER"
            return storage.get(key)

        def put(self, key: str, data: bytes, **options: Any) -> None:
            storage.put(key, data, **options)

    assert analyze_photo(photo.id, sessions=sessions, storage=RacingStorage(), settings=settings) == "superseded"  # type: ignore[arg-type]
    row = _reload(db, photo.id)
    assert (row.status, row.width, row.height, row.format) == ("analyzed", 1, 2, "OTHER")


def test_s3_storage_end_to_end(
    settings: Any,
    s3_server: str,
    account: Any,
    db: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Upload, analysis, download and deletion all work against an S3 bucket with a prefix."""
    from fastapi.testclient import TestClient

    from app.core.storage import S3Storage
    from app.main import create_app

    sent: list[tuple[str, ...]] = []
    monkeypatch.setattr("app.core.queue.send", lambda name, *args: sent.append((name, *args)))
    bucket = f"e2e-{uuid.uuid4().hex[:16]}"
    app = create_app(settings.model_copy(update={"storage_url": f"s3://{bucket}/p", "s3_endpoint_url": s3_server}))
    s3 = app.state.storage
    assert isinstance(s3, S3Storage)

    def raw_keys(prefix: str = "") -> list[str]:
        return sorted(o["Key"] for o in s3.client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))

    with TestClient(app) as c:
        subjects = []
        for name in ("One", "Two"):
            body = {"name": name, "class_word": "man", "consent": True}
            r = c.post("/v1/subjects", json=body, headers=account.headers)
            assert r.status_code == 201, r.text
            subjects.append(r.json()["id"])
        ids = []
        for sid, data in zip(subjects, (OBAMA, jpeg_bytes(300, 200)), strict=True):
            r = c.post(
                f"/v1/subjects/{sid}/photos", headers=account.headers, files=[("files", ("p.jpg", data, "image/jpeg"))]
            )
            assert r.status_code == 202, r.text
            ids.append(r.json()["photos"][0]["id"])
        assert sent == [("photos.analyze", ids[0]), ("photos.analyze", ids[1])]

        assert (
            analyze_photo(uuid.UUID(ids[0]), sessions=session_factory(settings), storage=s3, settings=settings)
            == "analyzed"
        )
        photo = c.get(f"/v1/subjects/{subjects[0]}/photos/{ids[0]}", headers=account.headers).json()
        assert (photo["status"], photo["format"], photo["width"], photo["height"]) == ("analyzed", "JPEG", 910, 1137)

        first = f"p/users/{account.id}/subjects/{subjects[0]}/"
        folder = f"{first}photos/{ids[0]}/"
        assert raw_keys(first) == [folder + "crop.jpg", folder + "original.jpg", folder + "thumb.jpg"]
        assert all(k.startswith(f"p/users/{account.id}/subjects/") for k in raw_keys())
        assert len(raw_keys()) == 4  # the second photo is not analysed yet: no thumbnail
        r = c.get(f"/v1/subjects/{subjects[0]}/photos/{ids[0]}/image?variant=crop", headers=account.headers)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"

        r = c.get(
            f"/v1/subjects/{subjects[0]}/photos/{ids[0]}/image", params={"variant": "original"}, headers=account.headers
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(r.content)) as img:
            assert (img.format, img.size) == ("JPEG", (910, 1137))

        r = c.delete(f"/v1/subjects/{subjects[0]}", headers=account.headers)
        assert r.status_code == 204, r.text
        assert raw_keys(first) == []
        remaining = raw_keys()
        assert len(remaining) == 1
        assert all(k.startswith(f"p/users/{account.id}/subjects/{subjects[1]}/photos/{ids[1]}/") for k in remaining)
        assert c.get(f"/v1/subjects/{subjects[0]}", headers=account.headers).status_code == 404
