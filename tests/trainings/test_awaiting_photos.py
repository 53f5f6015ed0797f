"""Trainings queued before their photos are analysed (`awaiting_photos`): started by the analysis hook, or by
the sweep when that hook was lost; never sent as a lost message while they wait."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.core import queue
from app.core.db import session_factory, session_scope
from app.db import Photo, Training
from app.trainings.start import start_awaiting
from worker.housekeeping.sweep import sweep

Sent = list[tuple[str, tuple[str, ...]]]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Every message sent during the test, captured instead of reaching the broker."""
    messages: Sent = []
    monkeypatch.setattr(queue, "send", lambda name, *args: messages.append((name, args)))
    return messages


@pytest.fixture
def sessions(settings: Any) -> sessionmaker[Session]:
    return session_factory(settings)


def _awaiting(sessions: sessionmaker[Session], account: Any, subject_id: str) -> Training:
    with session_scope(sessions) as session:
        row = Training(
            user_id=account.id,
            subject_id=uuid.UUID(subject_id),
            name="awaiting",
            base_model="tiny-sd15",
            family="sd15",
            tiny=True,
            trigger_word="zorvek",
            trigger_generated=False,
            params={"steps": 2, "learning_rate": 5e-3, "rank": 4, "resolution": 64, "seed": 1, "source": "tiny-sd15"},
            progress={},
            phases={},
            status="queued",
            awaiting_photos=True,
        )
        session.add(row)
        session.flush()
        return row


def _row(sessions: sessionmaker[Session], training_id: uuid.UUID) -> Training:
    with session_scope(sessions) as session:
        return session.get(Training, training_id)


def test_the_sweep_starts_an_awaiting_training_whose_photos_are_all_analysed(
    settings: Any, sessions: sessionmaker[Session], account: Any, ready_subject: dict, sent: Sent
) -> None:
    row = _awaiting(sessions, account, ready_subject["id"])
    wait = timedelta(seconds=settings.requeue_after_s)
    assert sweep(sessions=sessions, settings=settings, now=row.created_at + wait / 2)["trainings"] == {}
    assert sent == []  # not yet due: the analysis hook normally starts it at once

    report = sweep(sessions=sessions, settings=settings, now=row.created_at + wait)
    assert report["trainings"] == {"awaiting_checked": 1}
    assert [name for name, _ in sent] == ["training.run"] and sent[0][1] == (str(row.id),)
    started = _row(sessions, row.id)
    assert started.awaiting_photos is False and started.status == "queued" and started.resends == 0

    # Started: from now on it is an ordinary queued training, sent again only as a lost message.
    with session_scope(sessions) as session:
        assert start_awaiting(session, subject_id=row.subject_id, settings=settings) == 0


def test_an_awaiting_training_is_never_resent_while_photos_are_pending(
    settings: Any, sessions: sessionmaker[Session], account: Any, subject: dict, sent: Sent
) -> None:
    row = _awaiting(sessions, account, subject["id"])
    with session_scope(sessions) as session:
        session.add(
            Photo(
                user_id=account.id,
                subject_id=uuid.UUID(subject["id"]),
                filename="pending.jpg",
                source_format="JPEG",
                stored_ext="jpg",
                size_bytes=1,
                sha256="0" * 64,
                status="pending",
                reasons=[],
            )
        )
    far = row.created_at + timedelta(seconds=100 * settings.requeue_after_s)
    assert sweep(sessions=sessions, settings=settings, now=far)["trainings"] == {}
    assert "training.run" not in [name for name, _ in sent]
    assert _row(sessions, row.id).awaiting_photos is True


def test_an_awaiting_training_of_a_subject_not_ready_fails_with_the_reports_problems(
    settings: Any, sessions: sessionmaker[Session], account: Any, subject: dict, sent: Sent
) -> None:
    row = _awaiting(sessions, account, subject["id"])  # a subject with no photo at all
    with session_scope(sessions) as session:
        assert start_awaiting(session, subject_id=row.subject_id, settings=settings) == 1
    failed = _row(sessions, row.id)
    assert failed.status == "failed" and failed.awaiting_photos is False and failed.finished_at
    assert failed.error["code"] == "subject_not_ready" and "not ready" in failed.error["message"]
    assert "failed" in failed.phases
    assert [name for name, _ in sent] == ["notify.deliver"]  # the failure email, as for any failed training
