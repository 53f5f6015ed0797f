"""Stored objects no row owns (what a process killed mid-write leaves) are deleted by the sweep, a day on.

The objects are written here as such a process would have left them: under a model id no row has (an
export cut short), a generation whose row was deleted, a user who is gone. Their age is the store's own
(file times, S3's LastModified); the sweep's clock is moved past the grace instead.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from app.core import queue
from app.core.db import session_factory, session_scope
from app.core.keys import generation_prefix, model_prefix, photo_prefix, user_prefix
from app.core.storage import S3Storage
from app.db import Lock, Photo
from app.db.base import utcnow
from app.privacy.orphans import GRACE, find_orphans, purge_orphans
from tests.helpers import jpeg_bytes, wait_until_analyzed
from worker.housekeeping.orphans import STATE
from worker.housekeeping.sweep import sweep


def _leftovers(store: Any, user_id: uuid.UUID) -> dict[str, list[str]]:
    """Objects of three rows that do not exist, and one of a shape the service never writes."""
    gone_user = uuid.uuid4()
    made = {
        model_prefix(user_id, uuid.uuid4()): ["lora.safetensors", "samples/step-0002-0.jpg"],
        generation_prefix(user_id, uuid.uuid4()): ["input.jpg", "output-00.png"],
        user_prefix(gone_user): [f"subjects/{uuid.uuid4()}/photos/{uuid.uuid4()}/original.jpg", "files/x/content"],
    }
    for prefix, names in made.items():
        for name in names:
            store.put(prefix + name, b"left behind")
    store.put(f"{user_prefix(user_id)}notes/unknown.txt", b"a shape we do not write: left alone")
    return made


def _photo_keys(store: Any, account: Any, subject: dict[str, Any]) -> list[str]:
    with session_scope(session_factory()) as session:
        photo = session.scalar(select(Photo).where(Photo.user_id == account.id))
        return store.list(photo_prefix(account.id, uuid.UUID(subject["id"]), photo.id))


def test_objects_no_row_owns_go_a_day_after_their_last_write(client, account, subject, storage, db) -> None:
    upload = client.post(
        f"/v1/subjects/{subject['id']}/photos", files=[("files", ("a.jpg", jpeg_bytes()))], headers=account.headers
    )
    assert upload.status_code == 202 and upload.json()["photos"], upload.text
    wait_until_analyzed(client, account, subject["id"], 1)  # its crop and thumbnail are written
    owned = _photo_keys(storage, account, subject)
    assert owned
    made = _leftovers(storage, account.id)
    now = utcnow()

    assert find_orphans(db, storage, now=now + GRACE - timedelta(minutes=5)) == []  # too young to tell
    found = find_orphans(db, storage, now=now + GRACE + timedelta(minutes=5))
    assert found == sorted(made)
    counts = purge_orphans(db, storage, now=now + GRACE + timedelta(minutes=5))
    assert counts == {"prefixes": 3, "objects": 6}
    for prefix in made:
        assert storage.list(prefix) == []
    assert _photo_keys(storage, account, subject) == owned  # the photo's row exists: untouched
    assert storage.exists(f"{user_prefix(account.id)}notes/unknown.txt")


def test_on_s3_too(account, s3_server, db) -> None:
    store = S3Storage(f"orphans-{uuid.uuid4().hex[:12]}", endpoint_url=s3_server)
    store.ensure()
    _leftovers(store, account.id)
    counts = purge_orphans(db, store, now=datetime.now().astimezone() + GRACE + timedelta(minutes=5))
    assert counts == {"prefixes": 3, "objects": 6}
    assert store.list("users/") == [f"{user_prefix(account.id)}notes/unknown.txt"]


def test_the_sweep_looks_at_most_once_an_hour(account, storage, settings, db) -> None:
    def orphans_rule(now: datetime) -> dict[str, int]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(queue, "send", lambda *args: None)
            report = sweep(sessions=session_factory(settings), settings=settings, now=now)
        assert report is not None, "the sweep's lock was held"
        return report["orphans"]

    with session_scope(session_factory(settings)) as session:  # whatever an earlier sweep recorded
        state = session.get(Lock, STATE)
        if state is not None:
            session.delete(state)
    t0 = utcnow() + GRACE + timedelta(minutes=5)
    _leftovers(storage, account.id)
    assert orphans_rule(t0) == {"prefixes": 3, "objects": 6}
    made = _leftovers(storage, account.id)
    assert orphans_rule(t0 + timedelta(minutes=30)) == {}  # not an hour yet: not even listed
    assert all(storage.list(prefix) for prefix in made)
    assert orphans_rule(t0 + timedelta(minutes=61)) == {"prefixes": 3, "objects": 6}
