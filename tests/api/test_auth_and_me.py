"""API keys and the caller's own account."""

from __future__ import annotations

from sqlalchemy import select

from app.core.db import session_factory, session_scope
from app.db import ApiKey, Photo, Subject, User
from app.users.service import revoke_key
from tests.helpers import jpeg_bytes, wait_until_analyzed


def test_me(client, account):
    response = client.get("/v1/me", headers=account.headers)
    assert response.status_code == 200
    assert response.json()["email"] == account.email


def test_missing_wrong_and_revoked_keys(client, account, settings):
    assert client.get("/v1/me").json()["error"]["code"] == "missing_api_key"
    wrong = client.get("/v1/me", headers={"Authorization": "Bearer lk_wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert wrong.headers["www-authenticate"] == "Bearer"
    with session_scope(session_factory(settings)) as session:
        revoke_key(session, ident=account.key)
    revoked = client.get("/v1/me", headers=account.headers)
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "revoked_api_key"


def test_keys_are_stored_only_as_hashes(account, db):
    key = db.scalar(select(ApiKey).where(ApiKey.user_id == account.id))
    assert account.key.startswith("lk_") and len(account.key) > 40
    assert key.key_hash != account.key and account.key not in key.key_hash
    assert key.prefix == account.key[:10]


def test_delete_me_removes_everything_owned(client, account, make_account, storage, db):
    other = make_account()
    for who in (account, other):
        sid = client.post("/v1/subjects", json={"name": "S", "consent": True}, headers=who.headers).json()["id"]
        files = [("files", ("a.jpg", jpeg_bytes(color=(9, 9, 9) if who is account else (200, 1, 1))))]
        assert client.post(f"/v1/subjects/{sid}/photos", files=files, headers=who.headers).status_code == 202
    assert client.delete("/v1/me", headers=account.headers).status_code == 204
    assert client.get("/v1/me", headers=account.headers).status_code == 401
    # The deleted photo's analysis may have been running: the one worker takes tasks in order, so
    # once the other user's photo is analysed it has finished, and must have removed what it wrote.
    wait_until_analyzed(client, other, sid, 1)
    assert storage.list(f"users/{account.id}/") == []
    assert [k.rsplit("/", 1)[1] for k in storage.list(f"users/{other.id}/")][0] == "original.jpg"
    for table in (User, Subject, Photo):
        owner = table.id if table is User else table.user_id
        assert db.scalar(select(table).where(owner == account.id)) is None
    assert db.scalar(select(User).where(User.id == other.id)) is not None


def test_a_keys_use_is_recorded_once_a_minute_outside_the_request(client, account, db):
    """last_used_at is written after the request, in a transaction of its own, at most once a minute."""
    from sqlalchemy import select

    from app.db import ApiKey

    assert client.get("/v1/me", headers=account.headers).status_code == 200
    db.expire_all()
    first = db.scalar(select(ApiKey.last_used_at).where(ApiKey.user_id == account.id))
    assert first is not None
    assert client.get("/v1/me", headers=account.headers).status_code == 200
    db.expire_all()
    assert db.scalar(select(ApiKey.last_used_at).where(ApiKey.user_id == account.id)) == first
