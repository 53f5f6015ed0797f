"""Embedded mode: after an erasure, nothing of the person can be read from the SQLite files themselves.

Rows gone from every table is what tests/privacy/test_erasure.py checks; this reads the bytes of the
database file and its write-ahead log, where a deleted row's text would otherwise stay in free pages
(and in the log) until the space is reused. Runs on its own SQLite database even when the suite uses
Postgres.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from app.core.db import migrate, session_factory, session_scope
from app.core.settings import Settings
from app.main import create_app
from app.users.service import create_user


def _file_bytes(database: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (database, database.with_name(database.name + "-wal")) if p.exists())


def test_an_erased_account_cannot_be_read_from_the_sqlite_files(tmp_path: Path, settings: Any) -> None:
    database = tmp_path / "embedded.db"
    local = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{database}")
    migrate(local.resolved_database_url)
    marker = uuid.uuid4().hex[:12]
    email, subject_name = f"erase-{marker}@example.com", f"Subject {marker} Quill"
    with session_scope(session_factory(local)) as session:
        _, key = create_user(session, email=email)
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(local)) as client:
        for n in range(3):
            body = {"name": f"{subject_name} {n}", "class_word": "person", "consent": True}
            assert client.post("/v1/subjects", json=body, headers=headers).status_code == 201
        assert marker.encode() in _file_bytes(database)  # the test can see the text it looks for
        assert client.delete("/v1/me", headers=headers).status_code == 204
        left = _file_bytes(database)
    assert email.encode() not in left
    assert marker.encode() not in left
