"""Subjects: consent, ownership, listing, deletion with everything stored."""

from __future__ import annotations

import pytest

from tests.helpers import jpeg_bytes


def _create(client, account, **fields):
    body = {"name": "Ada", "class_word": "woman", "consent": True} | fields
    return client.post("/v1/subjects", json=body, headers=account.headers)


def test_create_and_read(client, account):
    response = _create(client, account)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["name"] == "Ada" and created["class_word"] == "woman" and created["consent"] is True
    assert created["photos"]["total"] == 0
    read = client.get(f"/v1/subjects/{created['id']}", headers=account.headers)
    assert read.status_code == 200 and read.json()["id"] == created["id"]


@pytest.mark.parametrize("consent", [False, None])
def test_consent_is_required(client, account, consent):
    """Without explicit consent no subject is created."""
    body = {"name": "Ada", "class_word": "woman"} | ({} if consent is None else {"consent": consent})
    response = client.post("/v1/subjects", json=body, headers=account.headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == ("consent_required" if consent is False else "invalid_input")
    assert client.get("/v1/subjects", headers=account.headers).json()["items"] == []


@pytest.mark.parametrize("fields", [{"name": "   "}, {"name": "x" * 101}, {"class_word": "Man!"}, {"extra": 1}])
def test_invalid_fields(client, account, fields):
    response = _create(client, account, **fields)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"


def test_list_is_paginated_and_private(client, account, make_account):
    """Each user sees only their own subjects, in creation order, page by page."""
    stranger = make_account()
    _create(client, stranger, name="Not yours")
    ids = [_create(client, account, name=f"S{i}").json()["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/subjects", params=params, headers=account.headers).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


def test_bad_cursor(client, account):
    response = client.get("/v1/subjects", params={"cursor": "nope"}, headers=account.headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and error["fields"][0]["field"] == "query.cursor"


def test_another_users_subject_answers_404(client, account, make_account):
    subject_id = _create(client, account).json()["id"]
    stranger = make_account()
    for method in ("get", "delete"):
        response = getattr(client, method)(f"/v1/subjects/{subject_id}", headers=stranger.headers)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "subject_not_found"
    assert client.get(f"/v1/subjects/{subject_id}", headers=account.headers).status_code == 200


def test_delete_removes_photos_and_stored_files(client, account, storage):
    keep = _create(client, account, name="Keep").json()["id"]
    gone = _create(client, account, name="Gone").json()["id"]
    for sid, color in ((keep, (1, 200, 3)), (gone, (200, 5, 9))):
        response = client.post(
            f"/v1/subjects/{sid}/photos", files=[("files", ("a.jpg", jpeg_bytes(color=color)))], headers=account.headers
        )
        assert response.status_code == 202
    assert client.delete(f"/v1/subjects/{gone}", headers=account.headers).status_code == 204
    assert client.get(f"/v1/subjects/{gone}", headers=account.headers).status_code == 404
    assert client.get(f"/v1/subjects/{gone}/photos", headers=account.headers).status_code == 404
    assert storage.list(f"users/{account.id}/subjects/{gone}/") == []
    kept = storage.list(f"users/{account.id}/subjects/{keep}/")
    assert sum(k.endswith("/original.jpg") for k in kept) == 1
