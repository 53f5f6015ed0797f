"""GET /v1/trainings/{id}, the call every client polls, answered by app.core.reads in one statement.

On Postgres (CI) the read runs on psycopg's asyncio pool; on SQLite through SQLAlchemy in a thread.
Either way it must answer exactly what the ordinary ORM path answers, refuse keys the same way, and
survive its connections being dropped by the server.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import select

from app.db import ApiKey, AuditEvent, Training
from app.trainings import service
from app.users.service import revoke_key


def _training(db, account, subject) -> Training:
    """A finished training with every field the API shows filled in."""
    t0 = datetime(2026, 12, 6, 9, 30, 15, 123456, tzinfo=UTC)
    row = Training(
        user_id=account.id,
        subject_id=uuid.UUID(subject["id"]),
        name='Ünïcode & "quotes" ✓',
        base_model="tiny-sd15",
        family="sd15",
        tiny=True,
        trigger_word="zorvek",
        status="failed",
        params={"steps": 400, "rank": 8, "learning_rate": 0.0001},
        progress={"step": 180, "total_steps": 400, "loss": 0.0731, "eta_seconds": 41.5},
        error={"code": "out_of_memory", "message": "The GPU ran out of memory.", "hint": "Try a smaller batch."},
        validation_prompts=["a photo of zorvek person, smiling"],
        webhook_url="https://hooks.example.com/lookalike?x=1",
        webhook_events=["completed", "failed"],
        phases={"train": {"seconds": 12.5}},
        started_at=t0,
        finished_at=t0 + timedelta(minutes=3),
        model_id=uuid.uuid4(),
    )
    db.add(row)
    db.commit()
    return row


def _pool_requests(app) -> int:
    pool = app.state.reader._pool
    return pool.get_stats().get("requests_num", 0) if pool is not None else 0


def test_the_polled_read_answers_exactly_what_the_orm_answers(client, app, account, subject, db):
    training = _training(db, account, subject)
    before = _pool_requests(app)
    response = client.get(f"/v1/trainings/{training.id}", headers=account.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    db.expire_all()
    assert response.json() == service.to_read(db.get(Training, training.id)).model_dump(mode="json")
    if db.get_bind().dialect.name == "postgresql":  # it went through the asyncio pool, not the ORM
        assert _pool_requests(app) == before + 1


def test_refusals_on_the_polled_read_are_the_ordinary_ones_and_audited(client, account, make_account, subject, db):
    training = _training(db, account, subject)
    url = f"/v1/trainings/{training.id}"

    assert client.get(url).json()["error"]["code"] == "missing_api_key"
    answer = client.get(url, headers={"Authorization": "Basic abc"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (401, "invalid_api_key")
    answer = client.get(url, headers={"Authorization": "Bearer lk_not-a-key"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (401, "invalid_api_key")
    reasons = db.scalars(
        select(AuditEvent.details).where(AuditEvent.action == "sign_in_failed").order_by(AuditEvent.id)
    ).all()
    assert [r["reason"] for r in reasons][-2:] == ["malformed_header", "unknown_key"]

    other = make_account()
    answer = client.get(url, headers=other.headers)  # someone else's training
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "training_not_found")
    answer = client.get(f"/v1/trainings/{uuid.uuid4()}", headers=account.headers)
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "training_not_found")

    revoke_key(db, ident=account.key)  # as `lookalike keys revoke` does
    db.commit()
    answer = client.get(url, headers=account.headers)
    assert (answer.status_code, answer.json()["error"]["code"]) == (401, "revoked_api_key")


def test_a_key_used_only_to_poll_records_its_use(client, account, subject, db):
    training = _training(db, account, subject)
    assert db.scalar(select(ApiKey.last_used_at).where(ApiKey.user_id == account.id)) is not None  # the subject
    db.execute(ApiKey.__table__.update().where(ApiKey.user_id == account.id).values(last_used_at=None))
    db.commit()
    from app.core import auth

    auth._TOUCHED.clear()  # this process recorded the key's use a moment ago, for the subject
    assert client.get(f"/v1/trainings/{training.id}", headers=account.headers).status_code == 200
    db.expire_all()
    assert db.scalar(select(ApiKey.last_used_at).where(ApiKey.user_id == account.id)) is not None


def test_the_polled_read_survives_the_server_dropping_its_connections(client, app, settings, account, subject, db):
    if db.get_bind().dialect.name != "postgresql":
        pytest.skip("the asyncio pool is Postgres only")
    training = _training(db, account, subject)
    url = f"/v1/trainings/{training.id}"
    assert client.get(url, headers=account.headers).status_code == 200
    server = settings.resolved_database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(server, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'lookalike-reads'"
        ).fetchone()[0]
    assert killed >= 1
    for _ in range(12):  # more than the pool holds: every dropped connection is replaced
        assert client.get(url, headers=account.headers).status_code == 200
