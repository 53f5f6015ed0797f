"""The cancel race in `_advance`: a cancel committed just before the phase move is never overwritten.

A listener on the engine commits the cancel from a separate connection at the last moment,
after `_advance` has decided to move the job on but before its UPDATE reaches the database.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import event, update

from app.core.db import get_engine, make_engine, session_factory, session_scope
from app.db import Subject, Training
from app.db.base import utcnow
from worker.training.errors import Canceled
from worker.training.tasks import _advance, _Job


@pytest.fixture
def job(settings: Any, account: Any) -> _Job:
    """A training in `preparing`, leased by worker token t1 (rows inserted directly: nothing is queued)."""
    with session_scope(session_factory(settings)) as session:
        subject = Subject(
            user_id=account.id, name="Race", class_word="person", consent_at=utcnow(), consent_version="test"
        )
        session.add(subject)
        session.flush()
        row = Training(
            user_id=account.id,
            subject_id=subject.id,
            name="race",
            base_model="tiny-sd15",
            family="sd15",
            tiny=True,
            trigger_word="zorvek",
            params={"steps": 20, "source": "tiny-sd15"},
            status="preparing",
            worker_token="t1",
            heartbeat_at=utcnow(),
            attempts=1,
            progress={},
            phases={"preparing": utcnow().isoformat()},
        )
        session.add(row)
        session.flush()
    return _Job(row.id, account.id, subject.id, "t1")


def _status(settings: Any, training_id: uuid.UUID) -> str:
    with session_scope(session_factory(settings)) as session:
        return session.get(Training, training_id).status


def test_cancel_just_before_advance_wins(settings: Any, job: _Job) -> None:
    """A cancel committed between _advance's decision and its UPDATE stops the job and stays canceled."""
    engine = get_engine(settings)
    other = make_engine(settings.resolved_database_url)  # a separate pool: a different connection for sure
    fired: list[str] = []

    def cancel_first(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if fired or not (statement.startswith("UPDATE trainings SET status") and "heartbeat_at" in statement):
            return
        fired.append(statement)
        with other.begin() as connection:
            canceled = connection.execute(
                update(Training).where(Training.id == job.id).values(status="canceled", finished_at=utcnow())
            ).rowcount
        assert canceled == 1

    event.listen(engine, "before_cursor_execute", cancel_first)
    try:
        with pytest.raises(Canceled):
            _advance(session_factory(settings), job, "preparing", "training")
    finally:
        event.remove(engine, "before_cursor_execute", cancel_first)
        other.dispose()
    assert len(fired) == 1
    assert _status(settings, job.id) == "canceled"


def test_advance_moves_on_without_a_cancel(settings: Any, job: _Job) -> None:
    """With no cancel, _advance moves the leased job to the next phase and records when it began."""
    _advance(session_factory(settings), job, "preparing", "training")
    with session_scope(session_factory(settings)) as session:
        row = session.get(Training, job.id)
        assert row.status == "training" and row.worker_token == "t1" and "training" in row.phases
