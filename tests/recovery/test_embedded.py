"""`lookalike serve` on the embedded defaults recovers by itself: real processes, real signals.

SQLite, folder storage and the filesystem broker, which drops a message for good once a
worker has taken it: only the housekeeping sweep brings such a job back.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import fixture_bytes, wait_for
from tests.procs import (
    alive,
    api_client,
    base_env,
    children,
    kill_tree,
    ready_subject,
    running,
    wait_ready,
    watch_steps,
)
from tests.recovery.conftest import STEPS, assert_resumed, db_row

pytestmark = pytest.mark.slow


def _start_training(http, subject_id: str) -> str:  # noqa: ANN001
    body = {"subject_id": subject_id, "name": "r", "base_model": "tiny-sd15", "steps": STEPS, "seed": 3}
    response = http.post("/v1/trainings", json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _embedded(tmp_path: Path, fast: dict) -> tuple[Path, dict, str, Any]:
    """A data folder, its environment and database URL, and a user's client for `lookalike serve`."""
    data = tmp_path / "data"
    env = base_env(data, **fast)
    return data, env, f"sqlite:///{data / 'lookalike.db'}", api_client(env)


def _checkpoints(data: Path, training_id: str) -> list[int]:
    found = data.glob(f"storage/users/*/trainings/{training_id}/checkpoints/step-*.pt")
    return sorted(int(p.stem.split("-")[1]) for p in found)


def _models(http, training_id: str) -> list[dict]:  # noqa: ANN001
    return [m for m in http.get("/v1/models").json()["items"] if m["training_id"] == training_id]


def test_sigkill_of_the_worker_then_restart_resumes_from_the_checkpoint(tmp_path: Path, fast: dict) -> None:
    """Worker processes SIGKILLed mid-run, the API stays up; after a restart the job resumes, succeeds once."""
    data, env, url, http = _embedded(tmp_path, fast)
    seen: list[int] = []
    with running(env, tmp_path / "serve1.log", "serve") as serve:
        wait_ready(http)
        training_id = _start_training(http, ready_subject(http))
        watch_steps(http, training_id, lambda b: b["progress"]["step"] >= 250, 120, seen)
        worker = children(serve.pid)[0]
        killed = kill_tree(worker)
        assert alive(serve.pid) and not any(alive(p) for p in killed)
        assert http.get("/healthz").status_code == 200  # the API stays up
        at_kill = http.get(f"/v1/trainings/{training_id}").json()
        assert at_kill["status"] == "training"
        checkpoint = max(_checkpoints(data, training_id))
        assert 200 <= checkpoint <= at_kill["progress"]["step"]
        serve.stop(signal.SIGTERM)
    assert db_row(url, "trainings", training_id, "attempts")["attempts"] == 1  # nothing took it meanwhile

    resumed: list[int] = []
    with running(env, tmp_path / "serve2.log", "serve") as serve:
        wait_ready(http)
        body = watch_steps(http, training_id, lambda b: b["status"] in ("succeeded", "failed"), 180, resumed)
        assert body["status"] == "succeeded", (body, serve.output()[-3000:])
        assert len(_models(http, training_id)) == 1
        serve.stop(signal.SIGTERM)
        assert f"resuming from checkpoints/step-{checkpoint:06d}.pt" in serve.output()
    assert_resumed(resumed, checkpoint)  # never back below the checkpoint
    assert db_row(url, "trainings", training_id, "attempts", "lost_workers") == {"attempts": 2, "lost_workers": 1}


def test_graceful_stop_checkpoints_and_hands_the_job_back(tmp_path: Path, fast: dict) -> None:
    """SIGINT to serve mid-run: a checkpoint at the current step, the lease given back, resumed on the next start."""
    data, env, url, http = _embedded(tmp_path, fast)
    seen: list[int] = []
    with running(env, tmp_path / "serve1.log", "serve") as serve:
        wait_ready(http)
        training_id = _start_training(http, ready_subject(http))
        watch_steps(http, training_id, lambda b: b["progress"]["step"] >= 150, 120, seen)
        # Serve kills a worker that has not stopped 60 s after SIGTERM: stopping well within that is the point.
        assert serve.stop(signal.SIGINT, timeout=45) == 0
        assert "handed back" in serve.output()
    row = db_row(url, "trainings", training_id, "status", "worker_token", "heartbeat_at", "progress")
    assert row["status"] == "training" and row["worker_token"] is None and row["heartbeat_at"] is None
    step = wait_for(lambda: _checkpoints(data, training_id), timeout=1)[-1]
    assert step >= 150 and step % 100 != 0  # saved at the step it stopped, not only at the cadence

    resumed: list[int] = []
    with running(env, tmp_path / "serve2.log", "serve") as serve:
        wait_ready(http)
        body = watch_steps(http, training_id, lambda b: b["status"] in ("succeeded", "failed"), 180, resumed)
        assert body["status"] == "succeeded", body
        assert len(_models(http, training_id)) == 1
        serve.stop(signal.SIGTERM)
        assert f"resuming from checkpoints/step-{step:06d}.pt" in serve.output()
    assert_resumed(resumed, seen[-1])  # never back below where it stopped
    assert db_row(url, "trainings", training_id, "attempts", "lost_workers") == {"attempts": 2, "lost_workers": 0}


def _batch(count: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    """`count` different JPEGs of one person (fixtures re-encoded at different sizes)."""
    import io

    from PIL import Image

    out = []
    sources = ("obama.jpg", "obama2.jpg", "obama3.jpg")
    for i in range(count):
        image = Image.open(io.BytesIO(fixture_bytes(sources[i % 3]))).convert("RGB")
        scale = 1.0 - 0.03 * (i // 3)
        image = image.resize((int(image.width * scale), int(image.height * scale)))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90 - i)
        out.append(("files", (f"p{i:02d}.jpg", buffer.getvalue(), "image/jpeg")))
    return out


def test_worker_killed_during_a_batch_of_photos(tmp_path: Path, fast: dict) -> None:
    """20 photos, the worker SIGKILLed while it analyses them: after its restart none stays pending."""
    env = base_env(tmp_path / "data", **fast)
    http = api_client(env)
    with running(env, tmp_path / "serve.log", "serve") as serve:
        wait_ready(http)
        subject = http.post("/v1/subjects", json={"name": "B", "class_word": "man", "consent": True}).json()
        upload = http.post(f"/v1/subjects/{subject['id']}/photos", files=_batch(20))
        assert upload.status_code == 202 and len(upload.json()["photos"]) == 20, upload.text

        def statuses() -> list[str]:
            return [p["status"] for p in http.get(f"/v1/subjects/{subject['id']}/photos").json()["items"]]

        wait_for(lambda: 2 <= statuses().count("analyzed") < 20, timeout=120, interval=0.05)
        kill_tree(children(serve.pid)[0])  # serve starts it again
        final = wait_for(lambda: (s := statuses()) and "pending" not in s and s, timeout=120, interval=0.3)
        assert len(final) == 20 and set(final) <= {"analyzed", "failed"}
        report = http.get(f"/v1/subjects/{subject['id']}/report").json()
        assert "analysis_in_progress" not in {p["code"] for p in report["problems"]}
        assert "starting it again" in serve.output()
        serve.stop(signal.SIGTERM)
