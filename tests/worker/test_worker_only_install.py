"""Workers import no web code: a worker whose machine has no FastAPI, Starlette or multipart runs both tasks."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.procs import api_client, base_env, kill_tree, ready_subject, running, wait_ready

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_the_web_stack_is_really_blocked() -> None:
    """The harness itself: importing fastapi fails there, the worker modules import."""
    code = "import worker.training.tasks, worker.analysis.tasks, worker.housekeeping.tasks, worker.celery_app\n"
    code += "try:\n    import fastapi\nexcept ModuleNotFoundError:\n    print('blocked')\n"
    done = subprocess.run(
        [sys.executable, "-c", "import tests.worker.web_blocked\n" + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "blocked"


@contextmanager
def _blocked_worker(env: dict[str, str], log: Path):  # noqa: ANN202
    handle = log.open("ab")
    argv = [sys.executable, "-m", "tests.worker.web_blocked", "worker", "--queues", "cpu,gpu", "--concurrency", "1"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
        handle.close()


def test_worker_without_web_code_analyses_and_trains(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data", min_training_photos=3, training_progress_s=0.2)
    http = api_client(env)
    with running(env, tmp_path / "api.log", "api"), _blocked_worker(env, tmp_path / "worker.log") as worker:
        wait_ready(http)
        subject_id = ready_subject(http)  # photos.analyze ran in the worker
        body = {"subject_id": subject_id, "name": "w", "base_model": "tiny-sd15", "steps": 3, "seed": 1}
        created = http.post("/v1/trainings", json=body)
        assert created.status_code == 202, created.text

        def finished() -> dict | None:
            row = http.get(f"/v1/trainings/{created.json()['id']}").json()
            return row if row["status"] in ("succeeded", "failed", "canceled") else None

        done = wait_for(finished, timeout=180, interval=0.3)
        log = (tmp_path / "worker.log").read_text(errors="replace")
        assert done["status"] == "succeeded", (done, log[-3000:])
        assert worker.poll() is None, log[-3000:]
