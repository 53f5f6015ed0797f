"""Consent: the statement a user agrees to, its version recorded on every subject, and no subject without it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import String, Uuid, column, create_engine, insert, select, table
from sqlalchemy.exc import IntegrityError

from app.core.db import migrate, normalize_url, session_factory, session_scope
from app.db import Subject
from app.db.base import UTCDateTime
from app.subjects.consent import CONSENT_TEXT, CONSENT_VERSION
from tests.procs import postgres_database


def test_the_statement_is_served_to_signed_in_users(client, account):
    assert client.get("/v1/consent").status_code == 401
    response = client.get("/v1/consent", headers=account.headers)
    assert response.status_code == 200
    body = response.json()
    assert body == {"version": CONSENT_VERSION, "text": CONSENT_TEXT}
    for words in ("I am the person", "explicit permission", "biometric data", "only to train", "delete"):
        assert words in body["text"]


@pytest.mark.parametrize("sent", [None, CONSENT_VERSION])
def test_the_version_agreed_to_is_recorded(client, account, db, sent):
    body = {"name": "Ada", "consent": True} | ({} if sent is None else {"consent_version": sent})
    response = client.post("/v1/subjects", json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["consent_version"] == CONSENT_VERSION and created["consent_at"]
    assert client.get(f"/v1/subjects/{created['id']}", headers=account.headers).json()["consent_version"] == (
        CONSENT_VERSION
    )
    row = db.get(Subject, uuid.UUID(created["id"]))
    assert row.consent_version == CONSENT_VERSION and row.consent_at is not None


@pytest.mark.parametrize("version", ["2020-01-01", "unversioned", ""])
def test_an_outdated_statement_is_refused(client, account, version):
    body = {"name": "Ada", "consent": True, "consent_version": version}
    response = client.post("/v1/subjects", json=body, headers=account.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "consent_version_outdated" and error["current_version"] == CONSENT_VERSION
    assert "GET /v1/consent" in error["hint"]
    assert client.get("/v1/subjects", headers=account.headers).json()["items"] == []


def test_consent_true_is_still_required_with_a_version(client, account):
    body = {"name": "Ada", "consent": False, "consent_version": CONSENT_VERSION}
    response = client.post("/v1/subjects", json=body, headers=account.headers)
    assert response.status_code == 422 and response.json()["error"]["code"] == "consent_required"


def test_the_database_holds_no_subject_without_recorded_consent(settings, account):
    """Photos and trainings hang off a subject, so none exists for a person without recorded consent."""
    with pytest.raises(IntegrityError), session_scope(session_factory(settings)) as session:
        session.add(Subject(user_id=account.id, name="Nobody asked", class_word="person", consent_at=datetime.now(UTC)))


@pytest.fixture
def fresh_url(tmp_path) -> Iterator[str]:
    """An empty database on the run's backend: a Postgres database of its own, or a SQLite file."""
    server = os.environ.get("LOOKALIKE_TEST_DATABASE_URL")
    if not server:
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    with postgres_database(server, f"lookalike_consent_{uuid.uuid4().hex[:10]}") as url:
        yield url


def test_subjects_from_before_versions_are_marked_unversioned(fresh_url):
    migrate(fresh_url, "0006")
    engine = create_engine(normalize_url(fresh_url))
    user_id, subject_id, now = uuid.uuid4(), uuid.uuid4(), datetime.now(UTC)
    try:
        # The tables as revision 0006 had them, with typed columns so that every backend binds the values.
        users = table("users", column("id", Uuid), column("email", String), column("created_at", UTCDateTime))
        subjects = table(
            "subjects",
            *(column(name, Uuid) for name in ("id", "user_id")),
            *(column(name, String) for name in ("name", "class_word")),
            *(column(name, UTCDateTime) for name in ("consent_at", "created_at")),
        )
        with engine.begin() as conn:
            conn.execute(insert(users).values(id=user_id, email="old@example.com", created_at=now))
            conn.execute(
                insert(subjects).values(
                    id=subject_id, user_id=user_id, name="Old", class_word="person", consent_at=now, created_at=now
                )
            )
        migrate(fresh_url)
        with engine.connect() as conn:
            version = conn.scalar(select(Subject.consent_version).where(Subject.id == subject_id))
        assert version == "unversioned"
    finally:
        engine.dispose()
