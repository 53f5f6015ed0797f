"""The audit log: every action that matters leaves one entry (who, what, to what, from where), in the
action's own transaction, readable by its user only through GET /v1/me/audit, and never a secret or image data.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, select

from app.cli import main
from app.db import AuditEvent
from tests.helpers import insert_model, jpeg_bytes

CLIENT_IP = "testclient"  # the TestClient's address


def entries(client: Any, account: Any, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/me/audit", params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def only(items: list[dict[str, Any]], action: str) -> dict[str, Any]:
    found = [e for e in items if e["action"] == action]
    assert len(found) == 1, (action, items)
    return found[0]


def dump(db: Any, event_id: str | uuid.UUID) -> str:
    """Every column of the stored row, as text to search for what must not be there."""
    db.expire_all()
    row = db.get(AuditEvent, uuid.UUID(str(event_id)))
    assert row is not None
    return json.dumps({c.key: getattr(row, c.key) for c in inspect(AuditEvent).column_attrs}, default=str)


def assert_clean(text: str, *, key: str, image: bytes | None = None) -> None:
    """Neither the API key nor any sign of the image's bytes."""
    assert key not in text and key[10:20] not in text
    if image is not None:
        head = image[:48]
        for form in (head.hex(), base64.b64encode(head).decode(), head.decode("latin-1")):
            assert form not in text


def test_subject_photo_and_deletions_are_recorded_with_the_key_prefix(client, account, db):
    image = jpeg_bytes(color=(30, 60, 90))
    subject = client.post("/v1/subjects", json={"name": "Ada", "consent": True}, headers=account.headers).json()
    upload = client.post(
        f"/v1/subjects/{subject['id']}/photos", files=[("files", ("a.jpg", image))], headers=account.headers
    )
    assert upload.status_code == 202, upload.text
    photo_id = upload.json()["photos"][0]["id"]
    assert client.delete(f"/v1/subjects/{subject['id']}/photos/{photo_id}", headers=account.headers).status_code == 204

    actor = f"api_key:{account.key[:10]}"
    items = entries(client, account)
    # Newest first.
    assert [e["action"] for e in items] == ["photo_deleted", "subject_created", "key_created"]
    created = only(items, "subject_created")
    assert created["target_type"] == "subject" and created["target_id"] == subject["id"]
    assert created["details"] == {"consent_version": subject["consent_version"]}
    photo = only(items, "photo_deleted")
    assert (photo["target_type"], photo["target_id"]) == ("photo", photo_id)
    assert photo["details"] == {"subject_id": subject["id"]}
    for event in (created, photo):
        assert_clean(dump(db, event["id"]), key=account.key, image=image)

    # Deleting the person erases what names them (app.privacy); that it was deleted stays.
    assert client.delete(f"/v1/subjects/{subject['id']}", headers=account.headers).status_code == 204
    deleted = only(entries(client, account), "subject_deleted")
    assert (deleted["target_type"], deleted["target_id"]) == ("subject", subject["id"])
    for event in (created, photo, deleted):
        assert event["actor"] == actor and event["ip_address"] == CLIENT_IP
    assert_clean(dump(db, deleted["id"]), key=account.key, image=image)


def test_failed_sign_ins_are_recorded_without_the_key(client, account, make_account, db):
    wrong = "lk_" + uuid.uuid4().hex + uuid.uuid4().hex
    before = db.scalar(select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(1))
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    assert client.get("/v1/subjects", headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
    assert client.get("/replicate/v1/account", headers={"Authorization": f"Token {wrong}"}).status_code == 401

    query = select(AuditEvent).where(AuditEvent.action == "sign_in_failed", AuditEvent.user_id.is_(None))
    if before is not None:
        query = query.where(AuditEvent.id > before)
    rows = list(db.scalars(query.order_by(AuditEvent.id)))
    assert [(r.actor, r.details, r.ip_address, r.target_id) for r in rows] == [
        ("anonymous", {"reason": "unknown_key"}, CLIENT_IP, None),
        ("anonymous", {"reason": "malformed_header"}, CLIENT_IP, None),
        ("anonymous", {"reason": "unknown_key"}, CLIENT_IP, None),
    ]
    for row in rows:
        text = dump(db, row.id)
        assert wrong not in text and wrong[3:13] not in text and "dXNlcjpwYXNz" not in text
    # Nobody's log shows them.
    assert all(e["action"] != "sign_in_failed" for e in entries(client, account))


def test_a_revoked_key_is_recorded_for_its_user_and_key_changes_by_the_cli(client, settings, db):
    runner = CliRunner()
    assert runner.invoke(main, ["users", "create", "audit-cli@example.com"]).exit_code == 0
    created = runner.invoke(main, ["keys", "create", "audit-cli@example.com", "--name", "laptop"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    first = runner.invoke(main, ["keys", "create", "audit-cli@example.com"]).stdout.strip()
    assert runner.invoke(main, ["keys", "revoke", key[:10]]).exit_code == 0
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code == 401

    class Caller:
        headers = {"Authorization": f"Bearer {first}"}

    items = entries(client, Caller)
    failed = only(items, "sign_in_failed")
    assert failed["actor"] == f"api_key:{key[:10]}" and failed["details"] == {"reason": "revoked_key"}
    assert failed["target_type"] == "api_key" and failed["ip_address"] == CLIENT_IP
    revoked = only(items, "key_revoked")
    assert revoked["actor"] == "cli" and revoked["target_id"] == failed["target_id"]
    laptop = [e for e in items if e["action"] == "key_created" and e["details"].get("name") == "laptop"]
    assert len(laptop) == 1 and laptop[0]["actor"] == "cli"
    assert laptop[0]["target_id"] == revoked["target_id"] and laptop[0]["details"]["prefix"] == key[:10]
    assert len([e for e in items if e["action"] == "key_created"]) == 3  # the user's first key, laptop, first
    for event in (failed, revoked, laptop[0]):
        text = dump(db, event["id"])
        assert_clean(text, key=key)
        assert_clean(text, key=first)


@pytest.fixture
def model(settings: Any, storage: Any, account: Any, make_lora: Any) -> dict[str, Any]:
    """A tiny-sd15 model of `account`'s, as a finished training leaves it (row and file); its kohya file
    is missing from storage."""
    from app.core.db import session_factory, session_scope
    from app.db import Model

    data = make_lora("sd15")
    model_id, key = insert_model(settings, storage, account.id, data)
    with session_scope(session_factory(settings)) as session:
        row = session.get(Model, model_id)
        row.files = {**row.files, "kohya": {"key": key + ".gone", "size_bytes": 1}}
    return {"id": str(model_id), "data": data}


def test_downloads_generations_and_model_deletion(client, account, model, db):
    download = client.get(f"/v1/models/{model['id']}/download", headers=account.headers, follow_redirects=False)
    assert download.status_code in (200, 307), download.text
    # A download that fails leaves no entry: it is written in the request's transaction.
    missing = client.get(f"/v1/models/{model['id']}/download?format=kohya", headers=account.headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "file_missing"

    image = jpeg_bytes(color=(200, 10, 10))
    uploaded = client.post("/v1/files", files={"content": ("start.jpg", image, "image/jpeg")}, headers=account.headers)
    assert uploaded.status_code == 201, uploaded.text
    file_id = uploaded.json()["id"]
    content = client.get(f"/v1/files/{file_id}/content", headers=account.headers, follow_redirects=False)
    assert content.status_code in (200, 307)
    assert client.delete(f"/v1/files/{file_id}", headers=account.headers).status_code == 204

    body = {"model_id": model["id"], "prompt": "portrait of zorvek person", "num_outputs": 1, "num_inference_steps": 2}
    generation = client.post("/v1/generations", json=body, headers=account.headers)
    assert generation.status_code in (201, 202), generation.text
    client.post(f"/v1/generations/{generation.json()['id']}/cancel", headers=account.headers)
    assert client.delete(f"/v1/models/{model['id']}", headers=account.headers).status_code == 204

    items = entries(client, account)
    downloaded = only(items, "model_downloaded")
    assert downloaded["target_id"] == model["id"]
    assert downloaded["details"] == {"format": "diffusers", "via": "download"}
    file_read = only(items, "file_downloaded")
    assert (file_read["target_type"], file_read["target_id"]) == ("file", file_id)
    assert only(items, "file_deleted")["target_id"] == file_id
    made = only(items, "generation_created")
    assert made["target_id"] == generation.json()["id"]
    assert made["details"] == {"kind": "images", "base_model": "tiny-sd15", "model_id": model["id"]}
    assert only(items, "model_deleted")["target_id"] == model["id"]
    for event in items:
        if event["action"] == "key_created":
            continue
        assert event["actor"] == f"api_key:{account.key[:10]}" and event["ip_address"] == CLIENT_IP
        text = dump(db, event["id"])
        assert_clean(text, key=account.key, image=image)
        assert_clean(text, key=account.key, image=model["data"])
        assert "portrait" not in text  # not even the prompt


def test_training_start_and_cancel(client, account, ready_subject, db):
    body = {"subject_id": ready_subject["id"], "name": "me", "base_model": "tiny-sd15", "steps": 4}
    started = client.post("/v1/trainings", json=body, headers=account.headers)
    assert started.status_code == 202, started.text
    training_id = started.json()["id"]
    assert client.post(f"/v1/trainings/{training_id}/cancel", headers=account.headers).status_code == 200

    items = entries(client, account)
    start = only(items, "training_started")
    assert (start["target_type"], start["target_id"]) == ("training", training_id)
    assert start["details"] == {"subject_id": ready_subject["id"], "base_model": "tiny-sd15", "steps": 4}
    cancel = only(items, "training_canceled")
    assert cancel["target_id"] == training_id and cancel["actor"] == f"api_key:{account.key[:10]}"
    assert items.index(cancel) < items.index(start)
    for event in (start, cancel):
        assert_clean(dump(db, event["id"]), key=account.key)


def test_users_see_only_their_own_entries_page_by_page(client, make_account):
    alice, bob = make_account(), make_account()
    for name in ("A1", "A2", "A3"):
        client.post("/v1/subjects", json={"name": name, "consent": True}, headers=alice.headers)
    bob_subject = client.post("/v1/subjects", json={"name": "B", "consent": True}, headers=bob.headers).json()
    # Bob's subject and its deletion never reach Alice.
    client.delete(f"/v1/subjects/{bob_subject['id']}", headers=bob.headers)

    seen, cursor = [], None
    while True:
        page = client.get(
            "/v1/me/audit", params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=alice.headers
        ).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [e["action"] for e in seen] == ["subject_created"] * 3 + ["key_created"]
    assert [e["id"] for e in seen] == sorted((e["id"] for e in seen), reverse=True)
    bobs = {e["id"] for e in entries(client, bob)}
    assert bobs and not bobs & {e["id"] for e in seen}
    assert bob_subject["id"] not in {e["target_id"] for e in seen}
    assert client.get("/v1/me/audit").status_code == 401
    bad = client.get("/v1/me/audit", params={"cursor": "nope"}, headers=alice.headers)
    assert bad.status_code in (400, 422) and "hint" in bad.json()["error"]


def test_deleting_the_account_keeps_only_that_it_happened(client, account, db):
    client.post("/v1/subjects", json={"name": "S", "consent": True}, headers=account.headers)
    assert client.delete("/v1/me", headers=account.headers).status_code == 204
    db.expire_all()
    assert db.scalar(select(AuditEvent).where(AuditEvent.user_id == account.id)) is None
    gone = db.scalars(select(AuditEvent).where(AuditEvent.action == "user_deleted")).all()[-1]
    # That an account was deleted, and when: no id, key prefix or address that leads back to the person.
    assert gone.user_id is None and gone.target_id is None and gone.ip_address is None and gone.actor == "erased"
    assert account.key[:10] not in str(dump(db, gone.id))
    assert_clean(dump(db, gone.id), key=account.key)
