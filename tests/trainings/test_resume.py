"""A worker killed mid-run: a copy of its message does nothing while the lease is fresh; once the sweep
sees the lease go stale it hands the job on, and the next worker resumes from the checkpoint."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
import torch
from safetensors.torch import load as load_tensors

from app.core import queue
from app.core.db import session_factory, session_scope
from app.db import Model, Training
from app.db.base import utcnow
from worker.housekeeping.sweep import sweep
from worker.training.tasks import run_training


class Killed(BaseException):  # noqa: N818 - what SIGKILL looks like from inside: nothing runs after it
    """Not an Exception: no handler in the task catches it, as none would run after a real kill."""


def _queued_training(settings: Any, account: Any, subject_id: str) -> uuid.UUID:
    # Inserted directly, not through the API: no message is sent, so this test drives the task itself.
    with session_scope(session_factory(settings)) as session:
        row = Training(
            user_id=account.id,
            subject_id=uuid.UUID(subject_id),
            name="resume",
            base_model="tiny-sd15",
            family="sd15",
            tiny=True,
            trigger_word="zorvek",
            trigger_generated=False,
            params={
                "steps": 20,
                "learning_rate": 5e-3,
                "rank": 4,
                "resolution": 64,
                "multires": [1.0],
                "seed": 11,
                "batch_size": None,
                "face_weight": 3.0,
                "gradient_checkpointing": False,
                "source": "tiny-sd15",
            },
            status="queued",
            progress={},
            phases={},
        )
        session.add(row)
        session.flush()
        return row.id


def _lora(settings: Any, storage: Any, training_id: uuid.UUID) -> dict[str, torch.Tensor]:
    with session_scope(session_factory(settings)) as session:
        model = session.query(Model).filter_by(training_id=training_id).one()
        return load_tensors(storage.get(model.files["diffusers"]["key"]))


def test_killed_worker_resumes_from_checkpoint(
    settings: Any, storage: Any, account: Any, ready_subject: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "training_progress_s", 0.0)  # report (and so reach the seam) every step
    monkeypatch.setattr(settings, "checkpoint_every", 5)
    sessions = session_factory(settings)
    killed_id = _queued_training(settings, account, ready_subject["id"])

    def kill_after_12(progress: Any) -> None:
        if progress.step == 12:
            raise Killed

    with pytest.raises(Killed):
        run_training(killed_id, sessions=sessions, storage=storage, settings=settings, on_step=kill_after_12)
    with session_scope(sessions) as session:
        row = session.get(Training, killed_id)
        assert row.status == "training" and row.progress["step"] == 12
    prefix = f"users/{account.id}/trainings/{killed_id}/checkpoints/"
    assert storage.list(prefix) == [prefix + "step-000005.pt", prefix + "step-000010.pt"]

    # Redelivered at once: the dead worker's lease is still fresh, so the job is not run twice.
    assert run_training(killed_id, sessions=sessions, storage=storage, settings=settings) == "running elsewhere"
    # The sweep leaves a fresh lease alone...
    sent: list[tuple[str, tuple[str, ...]]] = []
    monkeypatch.setattr(queue, "send", lambda name, *args: sent.append((name, args)))  # this test runs the job
    assert sweep(sessions=sessions, settings=settings)["trainings"] == {}
    # ...and hands the job on once the lease has gone stale.
    later = utcnow() + timedelta(seconds=settings.training_lease_s + 1)
    assert sweep(sessions=sessions, settings=settings, now=later)["trainings"] == {"lost_worker": 1}
    assert sent == [("training.run", (str(killed_id),))]
    seen: list[int] = []
    outcome = run_training(
        killed_id, sessions=sessions, storage=storage, settings=settings, on_step=lambda p: seen.append(p.step)
    )
    assert outcome == "succeeded"
    assert seen[0] == 11 and seen[-1] == 20  # the step counter continues from the checkpoint at 10
    with session_scope(sessions) as session:
        row = session.get(Training, killed_id)
        assert row.attempts == 2 and row.lost_workers == 1 and row.progress["step"] == 20

    # The same seed, uninterrupted, gives the same LoRA.
    straight_id = _queued_training(settings, account, ready_subject["id"])
    assert run_training(straight_id, sessions=sessions, storage=storage, settings=settings) == "succeeded"
    resumed, straight = _lora(settings, storage, killed_id), _lora(settings, storage, straight_id)
    assert resumed.keys() == straight.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=1e-4, atol=1e-6)
    # ...and training did move the weights.
    assert any(float(straight[k].abs().max()) > 0 for k in straight if "lora_B" in k)


def test_redelivered_finished_job_is_a_no_op(settings: Any, storage: Any, account: Any, ready_subject: dict) -> None:
    sessions = session_factory(settings)
    training_id = _queued_training(settings, account, ready_subject["id"])
    assert run_training(training_id, sessions=sessions, storage=storage, settings=settings) == "succeeded"
    assert run_training(training_id, sessions=sessions, storage=storage, settings=settings) == "already succeeded"
    assert run_training(uuid.uuid4(), sessions=sessions, storage=storage, settings=settings) == "gone"
