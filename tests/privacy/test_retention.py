"""Retention on a clock the test moves: `retention_days` after a training ends, the housekeeping sweep
deletes its cache and checkpoints and the photos it was trained on; the model and its samples stay."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from app.core import queue
from app.core.db import session_factory, session_scope
from app.core.keys import photo_prefix, training_prefix
from app.db import Photo, Subject, Training
from app.db.base import utcnow
from tests.helpers import fixture_bytes, jpeg_bytes, list_all_photos, wait_for, wait_until_reviewed
from worker.housekeeping.sweep import sweep

PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg")
WORK = ("cache/latents/0001.safetensors", "checkpoints/step-000002.pt", "snapshots/step-000002.safetensors")


def _retention(settings: Any, now: datetime) -> dict[str, int]:
    """One sweep at `now`; what its other rules would send goes nowhere."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(queue, "send", lambda *args: None)
        report = sweep(sessions=session_factory(settings), settings=settings, now=now)
    assert report is not None, "the sweep's lock was held"
    return report["retention"]


def _subject(client: Any, account: Any, name: str, photos: tuple[str, ...] = PHOTOS) -> str:
    created = client.post(
        "/v1/subjects", json={"name": name, "class_word": "man", "consent": True}, headers=account.headers
    )
    assert created.status_code == 201, created.text
    subject_id = created.json()["id"]
    files = [("files", (n, fixture_bytes(n), "image/jpeg")) for n in photos]
    assert client.post(f"/v1/subjects/{subject_id}/photos", files=files, headers=account.headers).status_code == 202
    wait_until_reviewed(client, account, subject_id, len(photos))
    return subject_id


def _objects(storage: Any, user_id: uuid.UUID, subject_id: str, photo_ids: list[str]) -> list[str]:
    return [k for p in photo_ids for k in storage.list(photo_prefix(user_id, uuid.UUID(subject_id), uuid.UUID(p)))]


def _leftovers(storage: Any, user_id: uuid.UUID, training_id: uuid.UUID) -> str:
    """What a failed run leaves in its work folder (a finished or canceled run removes it at once)."""
    prefix = training_prefix(user_id, training_id)
    for name in WORK:
        storage.put(prefix + name, b"tensors")
    return prefix


def test_photos_cache_and_checkpoints_go_the_model_stays(
    client: Any,
    account: Any,
    settings: Any,
    storage: Any,
    db: Any,
    few_photos_suffice: None,
) -> None:
    h = account.headers
    subject_id = _subject(client, account, "Trained")
    used = [p["id"] for p in list_all_photos(client, account, subject_id)]
    other_id = _subject(client, account, "Untrained", photos=("biden.jpg",))
    body = {"subject_id": subject_id, "name": "portrait", "base_model": "tiny-sd15", "steps": 2, "seed": 7}
    training_id = client.post("/v1/trainings", json=body, headers=h).json()["id"]

    def ended() -> dict | None:
        row = client.get(f"/v1/trainings/{training_id}", headers=h).json()
        return row if row["status"] in ("succeeded", "failed", "canceled") else None

    training = wait_for(ended, timeout=180, interval=0.3)
    assert training["status"] == "succeeded", training
    model = client.get(f"/v1/models/{training['model_id']}", headers=h).json()
    late = client.post(
        f"/v1/subjects/{subject_id}/photos", files=[("files", ("late.jpg", jpeg_bytes(), "image/jpeg"))], headers=h
    ).json()["photos"][0]["id"]
    work = _leftovers(storage, account.id, uuid.UUID(training_id))
    photo_objects = _objects(storage, account.id, subject_id, used)
    assert len(photo_objects) >= 2 * len(used)  # originals, thumbnails and crops
    finished = datetime.fromisoformat(training["finished_at"].replace("Z", "+00:00"))
    keep = timedelta(days=settings.retention_days)
    assert settings.retention_days == 7

    assert _retention(settings, finished + keep - timedelta(minutes=1)) == {}
    assert storage.list(work) and _objects(storage, account.id, subject_id, used) == photo_objects

    assert _retention(settings, finished + keep + timedelta(minutes=1)) == {"trainings": 1, "photos": 3}
    assert storage.list(work) == []
    assert _objects(storage, account.id, subject_id, used) == []
    assert [p["id"] for p in list_all_photos(client, account, subject_id)] == [late]  # uploaded after the run
    assert client.get(f"/v1/subjects/{subject_id}/photos/{late}/image", headers=h).status_code == 200
    assert len(list_all_photos(client, account, other_id)) == 1  # a subject nobody trained on
    db.expire_all()
    assert db.scalars(select(Photo).where(Photo.id.in_([uuid.UUID(p) for p in used]))).all() == []
    # The training says when; the model, its files, samples and contact sheet stay.
    after = client.get(f"/v1/trainings/{training_id}", headers=h).json()
    assert after["status"] == "succeeded" and "purged" in after["phases"]
    assert client.get(f"/v1/models/{model['id']}", headers=h).json()["samples"] == model["samples"]
    for fmt in ("diffusers", "kohya"):
        download = client.get(f"/v1/models/{model['id']}/download?format={fmt}", headers=h, follow_redirects=True)
        assert download.status_code == 200 and download.content
    for url in [s["url"] for s in model["samples"]] + [model["contact_sheet_url"]]:
        assert client.get(url.split("8000", 1)[-1], headers=h, follow_redirects=True).status_code == 200

    assert _retention(settings, finished + 3 * keep) == {}  # done once


def _training(settings: Any, account: Any, subject_id: str, *, at: datetime, status: str) -> uuid.UUID:
    """A training row that ran from `at` for an hour, added directly."""
    with session_scope(session_factory(settings)) as session:
        row = Training(
            user_id=account.id,
            subject_id=uuid.UUID(subject_id),
            name="earlier",
            base_model="tiny-sd15",
            family="sd15",
            tiny=True,
            trigger_word="zorvek",
            params={"steps": 2, "learning_rate": 5e-3, "rank": 4, "resolution": 64, "seed": 1},
            status=status,
            created_at=at,
            started_at=at,
            finished_at=at + timedelta(hours=1),
        )
        session.add(row)
        session.flush()
        return row.id


def test_photos_wait_for_the_latest_training_and_the_days_are_configurable(
    client: Any, account: Any, settings: Any, storage: Any, db: Any
) -> None:
    subject_id = _subject(client, account, "Twice")
    photos = [p["id"] for p in list_all_photos(client, account, subject_id)]
    objects = _objects(storage, account.id, subject_id, photos)
    db.expire_all()
    assert db.get(Subject, uuid.UUID(subject_id)).identity is not None
    start = utcnow() + timedelta(minutes=1)
    first = _training(settings, account, subject_id, at=start, status="succeeded")
    second = _training(settings, account, subject_id, at=start + timedelta(days=1), status="failed")
    first_work, second_work = (_leftovers(storage, account.id, t) for t in (first, second))
    two_days = settings.model_copy(update={"retention_days": 2})
    first_due = start + timedelta(hours=1, days=2, minutes=1)
    second_due = first_due + timedelta(days=1)

    assert _retention(settings, second_due) == {}  # 7 days by default

    # The first run's files go; the photos stay while a later training may still need them.
    assert _retention(two_days, first_due) == {"trainings": 1}
    assert storage.list(first_work) == [] and storage.list(second_work)
    assert _objects(storage, account.id, subject_id, photos) == objects

    assert _retention(two_days, second_due) == {"trainings": 1, "photos": len(photos)}
    assert storage.list(second_work) == []
    assert _objects(storage, account.id, subject_id, photos) == []
    assert list_all_photos(client, account, subject_id) == []
    db.expire_all()
    subject = db.get(Subject, uuid.UUID(subject_id))
    assert subject is not None and subject.identity is None  # the face encoding went with the photos
    failed = client.get(f"/v1/trainings/{second}", headers=account.headers).json()
    assert failed["status"] == "failed" and "purged" in failed["phases"]
