"""The sweep's rule for generations, on a clock the test moves: a dead worker's job is queued and sent
again, and fails after the attempts run out; a lost message is sent again; a cancel is left alone."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.core.db import session_scope
from app.db import Generation
from app.db.base import utcnow
from tests.housekeeping.conftest import Sent
from worker.generation.tasks import run_generation
from worker.housekeeping.sweep import sweep


def _generation(sessions: sessionmaker[Session], account: Any, **values: Any) -> uuid.UUID:
    with session_scope(sessions) as session:
        row = Generation(
            user_id=account.id,
            kind="images",
            base_model="tiny-sd15",
            family="sd15",
            tiny=True,
            prompt="zorvek",
            params={"images": []},
            loras=[],
            outputs=[],
            logs="",
            metrics={},
            **({"status": "queued"} | values),
        )
        session.add(row)
        session.flush()
        return row.id


def _row(sessions: sessionmaker[Session], generation_id: uuid.UUID) -> Generation:
    with session_scope(sessions) as session:
        row = session.get(Generation, generation_id)
        session.expunge(row)
        return row


def test_a_dead_workers_generation_is_sent_again_then_fails(
    sessions: sessionmaker[Session], settings: Any, account: Any, sent: Sent
) -> None:
    now = utcnow()
    stale = now - timedelta(seconds=settings.generation_lease_s + 1)
    dead = _generation(sessions, account, status="running", worker_token="w1", heartbeat_at=stale, attempts=1)
    alive = _generation(sessions, account, status="running", worker_token="w2", heartbeat_at=now, attempts=1)
    spent = _generation(
        sessions,
        account,
        status="running",
        worker_token="w3",
        heartbeat_at=stale,
        attempts=settings.training_max_attempts,
    )
    report = sweep(sessions=sessions, settings=settings, now=now)
    assert report["generations"] == {"lost_worker": 1, "failed": 1}
    assert sent == [("generation.run", (str(dead),))]
    requeued = _row(sessions, dead)
    assert (requeued.status, requeued.worker_token) == ("queued", None)
    assert _row(sessions, alive).status == "running"
    failed = _row(sessions, spent)
    assert failed.status == "failed" and failed.error["code"] == "worker_lost"


def test_a_lost_message_is_sent_again_and_a_cancel_is_left_alone(
    sessions: sessionmaker[Session], settings: Any, account: Any, sent: Sent
) -> None:
    waiting = _generation(sessions, account)
    canceled = _generation(sessions, account, status="canceled")
    assert sweep(sessions=sessions, settings=settings, now=utcnow())["generations"] == {}
    later = utcnow() + timedelta(seconds=settings.requeue_after_s + 1)
    assert sweep(sessions=sessions, settings=settings, now=later)["generations"] == {"resent": 1}
    assert sent == [("generation.run", (str(waiting),))]
    # A canceled (or already finished) generation's message does nothing.
    outcome = run_generation(canceled, sessions=sessions, storage=None, settings=settings)  # type: ignore[arg-type]
    assert outcome == "already canceled"
