"""Listing, reading, editing and deleting photos, and serving their images."""

from __future__ import annotations

import io

from PIL import Image

from tests.helpers import jpeg_bytes, wait_until_analyzed


def _upload(client, account, subject_id, n=1):
    files = [("files", (f"p{i}.jpg", jpeg_bytes(color=(i * 30, 90, 200)))) for i in range(n)]
    response = client.post(f"/v1/subjects/{subject_id}/photos", files=files, headers=account.headers)
    assert response.status_code == 202, response.text
    return response.json()["photos"]


def test_list_pages_and_filters(client, account, subject):
    photos = _upload(client, account, subject["id"], 5)
    base = f"/v1/subjects/{subject['id']}/photos"
    first = client.get(base, params={"limit": 3}, headers=account.headers).json()
    rest = client.get(base, params={"limit": 3, "cursor": first["next_cursor"]}, headers=account.headers).json()
    assert [p["id"] for p in first["items"] + rest["items"]] == [p["id"] for p in photos]
    assert rest["next_cursor"] is None
    failed = client.get(base, params={"status": "failed"}, headers=account.headers).json()
    assert failed["items"] == []
    bad = client.get(base, params={"status": "bogus"}, headers=account.headers)
    assert bad.status_code == 422


def test_patch_caption_and_excluded(client, account, subject):
    (photo,) = _upload(client, account, subject["id"])
    url = f"/v1/subjects/{subject['id']}/photos/{photo['id']}"
    response = client.patch(url, json={"caption": "  at the lake ", "excluded": True}, headers=account.headers)
    assert response.status_code == 200, response.text
    assert response.json()["caption"] == "at the lake" and response.json()["excluded"] is True
    cleared = client.patch(url, json={"caption": ""}, headers=account.headers).json()
    assert cleared["caption"] is None and cleared["excluded"] is True
    assert client.get(url, headers=account.headers).json()["caption"] is None
    assert client.patch(url, json={"caption": "x" * 1001}, headers=account.headers).status_code == 422
    assert client.patch(url, json={"status": "analyzed"}, headers=account.headers).status_code == 422


def test_image_variants(client, account, subject):
    (photo,) = _upload(client, account, subject["id"])
    base = f"/v1/subjects/{subject['id']}/photos/{photo['id']}/image"
    original = client.get(base, headers=account.headers)
    assert original.status_code == 200 and original.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(original.content)).size == (320, 240)
    early = client.get(base, params={"variant": "thumb"}, headers=account.headers)
    if early.status_code == 404:  # the worker makes it; it may already have
        assert early.json()["error"]["code"] == "variant_not_available"
    (analyzed,) = wait_until_analyzed(client, account, subject["id"], 1)
    assert set(analyzed["urls"]) == {"original", "thumb"}
    assert client.get(analyzed["urls"]["thumb"], headers=account.headers).status_code == 200
    crop = client.get(base, params={"variant": "crop"}, headers=account.headers)
    assert crop.status_code == 404 and crop.json()["error"]["code"] == "variant_not_available"
    assert client.get(base, params={"variant": "huge"}, headers=account.headers).status_code == 422


def test_another_users_photo_is_not_found(client, account, subject, make_account):
    (photo,) = _upload(client, account, subject["id"])
    stranger = make_account()
    stranger_subject = client.post(
        "/v1/subjects", json={"name": "Mine", "consent": True}, headers=stranger.headers
    ).json()
    for sid in (subject["id"], stranger_subject["id"]):
        url = f"/v1/subjects/{sid}/photos/{photo['id']}"
        assert client.get(url, headers=stranger.headers).status_code == 404
        assert client.get(url + "/image", headers=stranger.headers).status_code == 404
        assert client.patch(url, json={"excluded": True}, headers=stranger.headers).status_code == 404
        assert client.delete(url, headers=stranger.headers).status_code == 404
    assert (
        client.get(f"/v1/subjects/{subject['id']}/photos/{photo['id']}", headers=account.headers).json()["excluded"]
        is False
    )


def test_delete_photo_removes_its_files(client, account, subject, storage):
    first, second = _upload(client, account, subject["id"], 2)
    url = f"/v1/subjects/{subject['id']}/photos/{first['id']}"
    assert client.delete(url, headers=account.headers).status_code == 204
    assert client.get(url, headers=account.headers).status_code == 404
    keys = storage.list(f"users/{account.id}/")
    assert keys and all(second["id"] in k for k in keys)
