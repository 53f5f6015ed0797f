"""The housekeeping sweep on a clock the test moves: lost messages sent again with backoff, dead
workers' trainings and photos handed on or failed, cancels left alone, one sweep at a time.

Rows are inserted directly and `app.core.queue.send` is replaced, so no message reaches the
in-process worker: every send the sweep makes is captured here instead.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import session_scope
from app.db import Lock, Notification, Photo, Training
from app.db.base import utcnow
from tests.helpers import wait_for
from tests.housekeeping.conftest import Sent
from worker.analysis.tasks import analyze_photo
from worker.housekeeping.sweep import LOCK_NAME, acquire, release, sweep
from worker.training.tasks import _claim


def _sweep(sessions: sessionmaker[Session], settings: Any, now: datetime) -> dict[str, dict[str, int]]:
    report = sweep(sessions=sessions, settings=settings, now=now)
    assert report is not None, "the sweep's lock was held"
    return report


def _training(sessions: sessionmaker[Session], account: Any, subject_id: str, **values: Any) -> Training:
    """A training row added directly (so no message is sent), queued unless `values` say otherwise."""
    with session_scope(sessions) as session:
        row = Training(
            user_id=account.id,
            subject_id=uuid.UUID(subject_id),
            name="sweep",
            base_model="tiny-sd15",
            family="sd15",
            tiny=True,
            trigger_word="zorvek",
            trigger_generated=False,
            params={"steps": 20, "learning_rate": 5e-3, "rank": 4, "resolution": 64, "seed": 11, "source": "tiny-sd15"},
            progress={},
            phases={},
            **({"status": "queued"} | values),
        )
        session.add(row)
        session.flush()
        return row


def _photo(sessions: sessionmaker[Session], account: Any, subject_id: str, **values: Any) -> Photo:
    """A pending photo row added directly (so no message is sent and nothing is stored)."""
    with session_scope(sessions) as session:
        row = Photo(
            user_id=account.id,
            subject_id=uuid.UUID(subject_id),
            filename=f"stuck-{uuid.uuid4().hex[:6]}.jpg",
            source_format="JPEG",
            stored_ext="jpg",
            size_bytes=1234,
            sha256=uuid.uuid4().hex * 2,
            status="pending",
            reasons=[],
            **values,
        )
        session.add(row)
        session.flush()
        return row


def _get(sessions: sessionmaker[Session], model: type, row_id: uuid.UUID) -> Any:
    with session_scope(sessions) as session:
        return session.get(model, row_id)


# --- trainings --------------------------------------------------------------------------


def test_queued_training_is_resent_with_backoff(
    settings: Any, sessions: sessionmaker[Session], account: Any, subject: dict, sent: Sent
) -> None:
    """A queued training is sent again after requeue_after_s, and the next resend waits twice as long."""
    row = _training(sessions, account, subject["id"])
    wait = timedelta(seconds=settings.requeue_after_s)
    second = timedelta(seconds=1)

    assert _sweep(sessions, settings, row.created_at + wait - second)["trainings"] == {}
    assert sent == []

    first = row.created_at + wait
    assert _sweep(sessions, settings, first)["trainings"] == {"resent": 1}
    assert sent == [("training.run", (str(row.id),))]
    after = _get(sessions, Training, row.id)
    assert after.dispatched_at == first and after.resends == 1 and after.status == "queued"

    # The second resend waits 2 x requeue_after_s from the first, not requeue_after_s.
    assert _sweep(sessions, settings, first + wait)["trainings"] == {}
    assert _sweep(sessions, settings, first + 2 * wait - second)["trainings"] == {}
    assert len(sent) == 1
    assert _sweep(sessions, settings, first + 2 * wait)["trainings"] == {"resent": 1}
    assert sent == [("training.run", (str(row.id),))] * 2
    after = _get(sessions, Training, row.id)
    assert after.dispatched_at == first + 2 * wait and after.resends == 2


def test_stale_lease_is_released_and_sent_again(
    settings: Any, sessions: sessionmaker[Session], account: Any, subject: dict, sent: Sent
) -> None:
    """A running training whose heartbeat is older than the lease loses it and is sent again; a fresh one is kept."""
    beat = utcnow()
    row = _training(
        sessions, account, subject["id"], status="training", worker_token="dead", heartbeat_at=beat, attempts=1
    )
    lease = timedelta(seconds=settings.training_lease_s)

    assert _sweep(sessions, settings, beat + lease - timedelta(seconds=1))["trainings"] == {}
    kept = _get(sessions, Training, row.id)
    assert kept.worker_token == "dead" and kept.heartbeat_at == beat and kept.lost_workers == 0
    assert sent == []

    later = beat + lease + timedelta(seconds=1)
    assert _sweep(sessions, settings, later)["trainings"] == {"lost_worker": 1}
    released = _get(sessions, Training, row.id)
    assert released.worker_token is None and released.heartbeat_at is None
    assert released.lost_workers == 1 and released.status == "training"
    assert released.dispatched_at == later and released.resends == 0
    assert sent == [("training.run", (str(row.id),))]  # once: the release is not also counted as a lost message


def test_training_fails_after_max_lost_workers(
    settings: Any, sessions: sessionmaker[Session], account: Any, subject: dict, sent: Sent
) -> None:
    """After training_max_attempts dead workers the training ends failed with worker_lost, the failure email
    is queued in the same transaction, and the training is not sent again."""
    row = _training(sessions, account, subject["id"])
    lease = timedelta(seconds=settings.training_lease_s + 1)
    limit = settings.training_max_attempts
    for lost in range(1, limit + 1):
        job = _claim(row.id, sessions)  # a worker takes it, then dies without a heartbeat
        assert not isinstance(job, str), job
        claimed = _get(sessions, Training, row.id)
        assert claimed.worker_token == job.token
        report = _sweep(sessions, settings, claimed.heartbeat_at + lease)["trainings"]
        after = _get(sessions, Training, row.id)
        assert after.lost_workers == lost
        if lost < limit:
            assert report == {"lost_worker": 1} and after.worker_token is None
            assert len(sent) == lost
    assert report == {"failed": 1}
    with session_scope(sessions) as session:
        (email,) = session.scalars(select(Notification).where(Notification.training_id == row.id)).all()
        assert (email.channel, email.event, email.status) == ("email", "training.failed", "pending")
        assert email.payload["error"]["code"] == "worker_lost"
    assert sent == [("training.run", (str(row.id),))] * (limit - 1) + [("notify.deliver", (str(email.id),))]
    assert after.status == "failed" and after.worker_token is None and after.finished_at is not None
    assert after.error["code"] == "worker_lost"
    assert f"{limit} times" in after.error["message"] and after.error["hint"]

    # Failed is final: later sweeps neither touch it nor send it (only its undelivered email goes again).
    assert _sweep(sessions, settings, utcnow() + 100 * lease)["trainings"] == {}
    assert [name for name, _ in sent].count("training.run") == limit - 1
    assert _get(sessions, Training, row.id).status == "failed"


def test_canceled_training_is_left_alone(
    settings: Any, sessions: sessionmaker[Session], account: Any, subject: dict, sent: Sent
) -> None:
    """A canceled training whose worker's lease went stale is never released, resent or failed."""
    beat = utcnow()
    row = _training(
        sessions, account, subject["id"], status="canceled", worker_token="gone", heartbeat_at=beat, attempts=1
    )
    far = timedelta(seconds=100 * (settings.training_lease_s + settings.requeue_after_s))
    assert _sweep(sessions, settings, beat + far)["trainings"] == {}
    after = _get(sessions, Training, row.id)
    assert after.status == "canceled" and after.worker_token == "gone" and after.heartbeat_at == beat
    assert after.lost_workers == 0 and after.resends == 0 and after.error is None
    assert sent == []


# --- photos -----------------------------------------------------------------------------


def test_unclaimed_photo_is_resent(
    settings: Any, sessions: sessionmaker[Session], account: Any, subject: dict, sent: Sent
) -> None:
    """A pending photo no worker ever claimed is sent again once it has waited requeue_after_s."""
    row = _photo(sessions, account, subject["id"])
    wait = timedelta(seconds=settings.requeue_after_s)

    assert _sweep(sessions, settings, row.created_at + wait - timedelta(seconds=1))["photos"] == {}
    assert sent == []
    assert _sweep(sessions, settings, row.created_at + wait)["photos"] == {"resent": 1}
    assert sent == [("photos.analyze", (str(row.id),))]
    after = _get(sessions, Photo, row.id)
    assert after.status == "pending" and after.dispatched_at == row.created_at + wait and after.resends == 1


def test_stale_photo_claim_is_released_and_resent(
    settings: Any, sessions: sessionmaker[Session], account: Any, subject: dict, sent: Sent
) -> None:
    """A claim older than the analysis time limit with attempts left is released and the photo sent again."""
    started = utcnow()
    attempts = settings.analysis_max_attempts - 1
    row = _photo(sessions, account, subject["id"], analysis_started_at=started, analysis_attempts=attempts)
    limit = timedelta(seconds=settings.analysis_time_limit_s)

    assert _sweep(sessions, settings, started + limit - timedelta(seconds=1))["photos"] == {}  # still being analysed
    assert _get(sessions, Photo, row.id).analysis_started_at == started
    later = started + limit + timedelta(seconds=1)
    assert _sweep(sessions, settings, later)["photos"] == {"lost_worker": 1}
    assert sent == [("photos.analyze", (str(row.id),))]
    after = _get(sessions, Photo, row.id)
    assert after.status == "pending" and after.analysis_started_at is None
    assert after.analysis_attempts == attempts and after.dispatched_at == later and after.resends == 0


def test_photo_fails_after_max_attempts_and_report_names_it(
    settings: Any, sessions: sessionmaker[Session], client: Any, account: Any, subject: dict, sent: Sent
) -> None:
    """A stale claim with no attempts left fails the photo, and the subject's report stops waiting and names it."""
    started = utcnow()
    row = _photo(
        sessions, account, subject["id"], analysis_started_at=started, analysis_attempts=settings.analysis_max_attempts
    )
    later = started + timedelta(seconds=settings.analysis_time_limit_s + 1)
    assert _sweep(sessions, settings, later)["photos"] == {"failed": 1}
    assert sent == []
    after = _get(sessions, Photo, row.id)
    assert after.status == "failed" and after.verdict == "rejected" and after.analysis_started_at is None
    assert after.reasons[0]["code"] == "analysis_failed" and after.analyzed_at is not None

    def reviewed() -> dict | None:
        report = client.get(f"/v1/subjects/{subject['id']}/report", headers=account.headers).json()
        return report if report["reviewed_at"] else None

    report = wait_for(reviewed)
    assert "analysis_in_progress" not in [p["code"] for p in report["problems"]]
    assert report["photos"]["pending"] == 0 and report["photos"]["failed"] == 1
    [failed] = [a for a in report["advice"] if a["code"] == "analysis_failed"]
    assert row.filename in failed["message"]


def test_analyze_photo_fails_a_photo_out_of_attempts(
    settings: Any,
    sessions: sessionmaker[Session],
    storage: Any,
    account: Any,
    subject: dict,
    sent: Sent,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A photo that has used all its attempts fails when delivered again, without being analysed."""
    analysed: list[Any] = []
    monkeypatch.setattr("worker.analysis.tasks.analyze_image", lambda *a, **kw: analysed.append(a))
    limit = settings.analysis_max_attempts
    row = _photo(sessions, account, subject["id"], analysis_attempts=limit)  # no stored original: none is read

    assert analyze_photo(row.id, sessions=sessions, storage=storage, settings=settings) == "failed"
    assert analysed == []
    after = _get(sessions, Photo, row.id)
    assert after.status == "failed" and after.verdict == "rejected" and after.analysis_started_at is None
    assert after.reasons[0]["code"] == "analysis_failed"
    assert f"stopped the worker {limit} times" in after.error
    assert sent == []


# --- one sweep at a time ----------------------------------------------------------------


def test_only_one_holder_of_the_sweep_lock(settings: Any, sessions: sessionmaker[Session], sent: Sent) -> None:
    """While one holder has the lock a second cannot take it and sweep() does nothing; after release it can."""
    ttl = 60.0
    try:
        assert acquire(sessions, holder="A", now=utcnow(), ttl=ttl)
        assert not acquire(sessions, holder="B", now=utcnow(), ttl=ttl)
        assert sweep(sessions=sessions, settings=settings) is None
        release(sessions, holder="B", now=utcnow())  # not the holder: no effect
        assert not acquire(sessions, holder="B", now=utcnow(), ttl=ttl)
        release(sessions, holder="A", now=utcnow())
        assert acquire(sessions, holder="B", now=utcnow(), ttl=ttl)
    finally:
        release(sessions, holder="A", now=utcnow())
        release(sessions, holder="B", now=utcnow())
    assert sweep(sessions=sessions, settings=settings) is not None


def test_concurrent_acquire_has_one_winner(settings: Any, sessions: sessionmaker[Session]) -> None:
    """Four sweepers taking the lock at the same moment: exactly one gets it."""
    holders = [f"racer-{i}" for i in range(4)]
    start = threading.Barrier(len(holders))

    def take(holder: str) -> bool:
        start.wait()
        return acquire(sessions, holder=holder, now=utcnow(), ttl=60.0)

    try:
        with ThreadPoolExecutor(len(holders)) as pool:
            won = list(pool.map(take, holders))
        assert won.count(True) == 1, won
        winner = holders[won.index(True)]
        assert _get(sessions, Lock, LOCK_NAME).holder == winner
    finally:
        for holder in holders:
            release(sessions, holder=holder, now=utcnow())
