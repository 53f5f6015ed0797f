"""DELETE /v1/me and DELETE /v1/subjects/{id}: after a whole journey, nothing of the user (or the person)
is left in any table, in the store or in the outbox folder, and nobody else's data is touched."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from app.core.keys import training_prefix
from app.db import Model, Training
from tests.helpers import fixture_bytes, list_all_photos, wait_for, wait_until_reviewed
from tests.http_receiver import Receiver
from tests.privacy.conftest import Trace, journey, upload_file
from tests.privacy.scan import emails_to, files_naming, needles, objects_naming, rows_naming


def _scan(db: Any, storage: Any, settings: Any, wanted: set[str], **kw: Any) -> list[str]:
    """Every trace of `wanted`: database rows, stored objects, files in the data folder (outbox included)."""
    db.expire_all()
    found = rows_naming(db, wanted, **kw) + objects_naming(storage, wanted)
    for folder in (settings.data_dir / "storage", settings.outbox_dir):
        found += files_naming(folder, wanted)
    return found


def _deletion_record(action: str) -> Any:
    """The audit log's entry of the deletion itself: that it happened and when, nothing about what was deleted."""

    def allowed(table: str, row: dict[str, Any]) -> bool:
        return table == "audit_events" and row["action"] == action and not row["details"]

    return allowed


def _still_there(client: Any, account: Any, trace: Trace) -> None:
    """The journey's results still answer through the API."""
    h = account.headers
    assert len(list_all_photos(client, account, trace.subject_id)) == len(trace.photos)
    for model_id in trace.models:
        assert client.get(f"/v1/models/{model_id}/download", headers=h, follow_redirects=True).status_code == 200
        samples = client.get(f"/v1/models/{model_id}", headers=h).json()["samples"]
        assert samples and client.get(samples[0]["url"].split("8000", 1)[-1], headers=h).status_code == 200
    for generation_id in trace.generations:
        output = client.get(f"/v1/generations/{generation_id}", headers=h).json()["outputs"][0]["url"]
        assert client.get(output.split("8000", 1)[-1], headers=h).status_code == 200


def test_delete_me_leaves_nothing_of_the_user(
    client: Any,
    make_account: Any,
    settings: Any,
    storage: Any,
    db: Any,
    receiver: Receiver,
    few_photos_suffice: None,
) -> None:
    leaving, staying = make_account(), make_account()
    for who in (leaving, staying):
        assert client.post("/v1/me/webhook-secret", headers=who.headers).status_code == 201
    file_id = upload_file(client, leaving)
    gone = journey(client, leaving, settings, webhook=receiver.url, start_image=file_id)
    kept = journey(client, staying, settings, webhook=receiver.url)
    kept_file = upload_file(client, staying)
    wanted = needles(leaving.id, leaving.email, leaving.key, file_id, *gone.values())
    assert _scan(db, storage, settings, wanted), "the scan finds the journey before the deletion"
    kept_emails = emails_to(settings.outbox_dir, staying.email)
    assert kept_emails and emails_to(settings.outbox_dir, leaving.email)

    response = client.delete("/v1/me", headers=leaving.headers)
    assert response.status_code == 204, response.text

    assert client.get("/v1/me", headers=leaving.headers).status_code == 401
    assert _scan(db, storage, settings, wanted) == []  # the audit's "user_deleted" names no one
    assert storage.list(f"users/{leaving.id}/") == []
    assert not (settings.data_dir / "storage" / "users" / str(leaving.id)).exists()
    assert emails_to(settings.outbox_dir, leaving.email) == []
    # The other user lost nothing.
    assert emails_to(settings.outbox_dir, staying.email) == kept_emails
    assert len(client.get(f"/v1/trainings/{kept.trainings[0]}/webhook-deliveries", headers=staying.headers).json()) == 2
    assert client.get(f"/v1/files/{kept_file}", headers=staying.headers).status_code == 200
    _still_there(client, staying, kept)


def test_delete_subject_takes_the_person_and_everything_made_from_their_face(
    client: Any,
    account: Any,
    settings: Any,
    storage: Any,
    db: Any,
    receiver: Receiver,
    few_photos_suffice: None,
) -> None:
    assert client.post("/v1/me/webhook-secret", headers=account.headers).status_code == 201
    file_id = upload_file(client, account)
    gone = journey(client, account, settings, webhook=receiver.url, start_image=file_id)
    kept = journey(client, account, settings)
    wanted = needles(*gone.values())
    assert _scan(db, storage, settings, wanted), "the scan finds the journey before the deletion"
    emails_before = emails_to(settings.outbox_dir, account.email)

    response = client.delete(f"/v1/subjects/{gone.subject_id}", headers=account.headers)
    assert response.status_code == 204, response.text

    assert _scan(db, storage, settings, wanted, allowed=_deletion_record("subject_deleted")) == []
    h = account.headers
    assert client.get(f"/v1/subjects/{gone.subject_id}", headers=h).status_code == 404
    assert client.get(f"/v1/trainings/{gone.trainings[0]}", headers=h).status_code == 404
    assert client.get(f"/v1/models/{gone.models[0]}", headers=h).status_code == 404
    assert client.get(f"/v1/generations/{gone.generations[0]}", headers=h).status_code == 404
    # The user, their other subject with its model and generation, and their uploaded file stay.
    assert client.get("/v1/me", headers=h).status_code == 200
    assert client.get(f"/v1/subjects/{kept.subject_id}", headers=h).status_code == 200
    assert client.get(f"/v1/files/{file_id}", headers=h).status_code == 200
    _still_there(client, account, kept)
    left = emails_to(settings.outbox_dir, account.email)
    assert len(left) == len(emails_before) - 1
    assert all(str(n) in "".join(p.read_text() for p in left) for n in kept.notifications)


def test_deleting_a_subject_stops_its_running_training(
    client: Any, account: Any, settings: Any, storage: Any, db: Any, few_photos_suffice: None
) -> None:
    subjects = []
    for name in ("Running", "Next"):
        created = client.post(
            "/v1/subjects", json={"name": name, "class_word": "man", "consent": True}, headers=account.headers
        ).json()
        files = [("files", (n, fixture_bytes(n), "image/jpeg")) for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")]
        assert (
            client.post(f"/v1/subjects/{created['id']}/photos", files=files, headers=account.headers).status_code == 202
        )
        assert wait_until_reviewed(client, account, created["id"], 3)["report"]["ready_to_train"]
        subjects.append(created["id"])
    body = {"subject_id": subjects[0], "name": "long", "base_model": "tiny-sd15", "steps": 5000}
    long = client.post("/v1/trainings", json=body, headers=account.headers).json()
    prefix = training_prefix(account.id, uuid.UUID(long["id"]))

    def training() -> bool:
        row = client.get(f"/v1/trainings/{long['id']}", headers=account.headers).json()
        return row["status"] == "training" and row["progress"]["step"] >= 1

    wait_for(training, timeout=120, interval=0.2)
    assert storage.list(prefix), "the running training has written its cache"

    assert client.delete(f"/v1/subjects/{subjects[0]}", headers=account.headers).status_code == 204

    # One worker runs one job at a time: once the next training has run, the deleted one has stopped.
    body = {"subject_id": subjects[1], "name": "next", "base_model": "tiny-sd15", "steps": 2}
    following = client.post("/v1/trainings", json=body, headers=account.headers)
    assert following.status_code == 202, following.text

    def ended() -> dict | None:
        row = client.get(f"/v1/trainings/{following.json()['id']}", headers=account.headers).json()
        return row if row["status"] in ("succeeded", "failed", "canceled") else None

    assert wait_for(ended, timeout=180, interval=0.3)["status"] == "succeeded"
    assert storage.list(prefix) == []
    assert objects_naming(storage, needles(subjects[0], long["id"])) == []
    db.expire_all()
    assert db.scalars(select(Training).where(Training.id == uuid.UUID(long["id"]))).all() == []
    assert db.scalars(select(Model).where(Model.subject_id == uuid.UUID(subjects[0]))).all() == []
