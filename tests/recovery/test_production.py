"""The production shape on real Postgres and Redis: `lookalike api`, `lookalike beat` and `lookalike worker`
as separate processes. Only the worker (or the broker, or the worker's database connections) is hurt.

Runs when LOOKALIKE_TEST_DATABASE_URL and LOOKALIKE_TEST_REDIS_URL are set (as `.ci/run` does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.helpers import fixture_bytes, wait_for
from tests.procs import (
    Proc,
    api_client,
    base_env,
    free_port,
    kill_tree,
    postgres_database,
    ready_subject,
    wait_ready,
    watch_steps,
)
from tests.recovery.conftest import STEPS, assert_resumed, db_row

PG = os.environ.get("LOOKALIKE_TEST_DATABASE_URL")
REDIS = os.environ.get("LOOKALIKE_TEST_REDIS_URL")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (PG and REDIS), reason="needs LOOKALIKE_TEST_DATABASE_URL and LOOKALIKE_TEST_REDIS_URL"),
]
WORKER_APP = "lookalike-worker"


@pytest.fixture
def database() -> Iterator[str]:
    """A database of its own for this test's processes, dropped afterwards."""
    with postgres_database(PG, f"lookalike_recovery_{uuid.uuid4().hex[:10]}") as url:
        yield url


class Stack:
    """api, beat and worker processes sharing one database and one broker."""

    def __init__(self, tmp: Path, database: str, broker: str, fast: dict[str, Any]) -> None:
        self.tmp, self.database = tmp, database
        prefix = f"lookalike-recovery-{uuid.uuid4().hex[:8]}:"
        self.env = base_env(tmp / "data", database_url=database, broker_url=broker, broker_key_prefix=prefix, **fast)
        # The worker's connections carry a name, so a test can find and kill exactly those.
        self.worker_env = dict(self.env, LOOKALIKE_DATABASE_URL=f"{database}?application_name={WORKER_APP}")
        self.http = api_client(self.env)
        self.procs: list[Proc] = []
        self.workers = 0

    def start(self, concurrency: int = 2) -> Stack:
        self.procs.append(Proc(self.env, self.tmp / "api.log", "api"))
        self.procs.append(Proc(self.env, self.tmp / "beat.log", "beat"))
        self.worker = self.start_worker(concurrency)
        wait_ready(self.http)
        return self

    def start_worker(self, concurrency: int = 2) -> Proc:
        self.workers += 1
        args = ("worker", "--queues", "cpu,gpu", "--concurrency", str(concurrency))
        proc = Proc(self.worker_env, self.tmp / f"worker{self.workers}.log", *args)
        self.procs.append(proc)
        return proc

    def row(self, table: str, row_id: str, *columns: str) -> dict[str, Any]:
        return db_row(self.database, table, row_id, *columns)

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                kill_tree(proc.pid)
            proc.handle.close()


@pytest.fixture
def stack(tmp_path: Path, database: str, fast: dict[str, Any]) -> Iterator[Stack]:
    s = Stack(tmp_path, database, REDIS, fast)
    try:
        yield s
    finally:
        s.close()


def _train(stack: Stack) -> str:
    body = {"subject_id": ready_subject(stack.http), "name": "r", "base_model": "tiny-sd15", "steps": STEPS, "seed": 5}
    response = stack.http.post("/v1/trainings", json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _finished(body: dict) -> bool:
    return body["status"] in ("succeeded", "failed", "canceled")


def test_worker_killed_and_started_again_resumes(stack: Stack) -> None:
    """SIGKILL of the worker alone; a new worker resumes from the checkpoint; one model."""
    stack.start()
    training_id = _train(stack)
    seen: list[int] = []
    watch_steps(stack.http, training_id, lambda b: b["progress"]["step"] >= 250, 120, seen)
    kill_tree(stack.worker.pid)
    assert stack.http.get("/healthz").status_code == 200
    checkpoint = stack.http.get(f"/v1/trainings/{training_id}").json()["progress"]["step"] // 100 * 100
    worker = stack.start_worker()
    resumed: list[int] = []
    body = watch_steps(stack.http, training_id, _finished, 180, resumed)
    assert body["status"] == "succeeded", (body, worker.output()[-3000:])
    assert f"resuming from checkpoints/step-{checkpoint:06d}.pt" in worker.output()
    assert_resumed(resumed, checkpoint)
    assert stack.row("trainings", training_id, "attempts", "lost_workers") == {"attempts": 2, "lost_workers": 1}
    models = [m for m in stack.http.get("/v1/models").json()["items"] if m["training_id"] == training_id]
    assert len(models) == 1


def test_photo_that_kills_its_worker_every_time_ends_failed(stack: Stack) -> None:
    """Each time the worker takes this photo, the worker process dies; after the bounded attempts it fails."""
    stack.env["LOOKALIKE_ANALYSIS_TIME_LIMIT_S"] = stack.worker_env["LOOKALIKE_ANALYSIS_TIME_LIMIT_S"] = "4"
    stack.start(concurrency=1)
    http = stack.http
    subject = http.post("/v1/subjects", json={"name": "B", "class_word": "man", "consent": True}).json()
    files = [("files", ("poison.jpg", fixture_bytes("obama2.jpg"), "image/jpeg"))]
    photo = http.post(f"/v1/subjects/{subject['id']}/photos", files=files).json()["photos"][0]

    def claimed(attempt: int) -> bool:
        row = stack.row("photos", photo["id"], "analysis_attempts", "analysis_started_at", "status")
        return row["analysis_attempts"] == attempt and row["analysis_started_at"] is not None

    for attempt in (1, 2, 3):  # settings.analysis_max_attempts
        wait_for(lambda a=attempt: claimed(a), timeout=60, interval=0.02)
        kill_tree(stack.worker.pid)  # as the OOM killer would, mid-analysis
        stack.worker = stack.start_worker(concurrency=1)

    def failed() -> dict | None:
        body = http.get(f"/v1/subjects/{subject['id']}/photos/{photo['id']}").json()
        return body if body["status"] == "failed" else None

    body = wait_for(failed, timeout=60, interval=0.2)
    assert body["verdict"] == "rejected" and body["reasons"][0]["code"] == "analysis_failed"
    assert "stopped the worker 3 times" in body["error"]
    report = http.get(f"/v1/subjects/{subject['id']}/report").json()
    assert "analysis_in_progress" not in {p["code"] for p in report["problems"]}
    assert any(a["code"] == "analysis_failed" and "poison.jpg" in a["message"] for a in report["advice"])


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Any]:
    """A redis-server of this test's own on a free port, which the test may stop and start again."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(tmp_path)]

    class Server:
        url = f"redis://127.0.0.1:{port}/0"
        proc: subprocess.Popen[bytes] | None = None

        def start(self) -> None:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            import redis

            wait_for(lambda: _pings(redis.Redis.from_url(self.url)), timeout=20, interval=0.1)

        def kill(self) -> None:
            if self.proc and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    server = Server()
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False


def test_redis_restarted_during_a_run(tmp_path: Path, database: str, private_redis: Any, fast: dict) -> None:
    """The broker dies and comes back empty mid-training, with photos queued: everything still finishes."""
    stack = Stack(tmp_path, database, private_redis.url, fast)
    try:
        stack.start()
        training_id = _train(stack)
        seen: list[int] = []
        watch_steps(stack.http, training_id, lambda b: b["progress"]["step"] >= 150, 120, seen)
        subject = stack.http.post("/v1/subjects", json={"name": "C", "class_word": "man", "consent": True}).json()
        files = [("files", (n, fixture_bytes(n), "image/jpeg")) for n in ("obama.jpg", "biden.jpg")]
        assert stack.http.post(f"/v1/subjects/{subject['id']}/photos", files=files).status_code == 202
        private_redis.kill()  # queued messages and unacknowledged ones are gone with it
        private_redis.start()
        body = watch_steps(stack.http, training_id, _finished, 240, seen)
        assert body["status"] == "succeeded", body

        def analysed() -> bool:
            items = stack.http.get(f"/v1/subjects/{subject['id']}/photos").json()["items"]
            return all(p["status"] in ("analyzed", "failed") for p in items)

        wait_for(analysed, timeout=120, interval=0.3)
    finally:
        stack.close()


def test_worker_database_connections_killed_during_a_run(stack: Stack) -> None:
    """pg_terminate_backend on the worker's connections, over and over, mid-training: it still succeeds."""
    import psycopg

    stack.start()
    training_id = _train(stack)
    seen: list[int] = []
    libpq = make_url(stack.database).set(drivername="postgresql").render_as_string(hide_password=False)
    killed = 0
    with psycopg.connect(libpq, autocommit=True) as admin:
        polls = 0

        def kill_and_check(body: dict) -> bool:
            nonlocal killed, polls
            polls += 1
            if polls % 10:  # about once a second
                return _finished(body)
            killed += admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                (WORKER_APP,),
            ).fetchone()[0]
            return _finished(body)

        body = watch_steps(stack.http, training_id, kill_and_check, 240, seen)
    assert killed > 0
    assert body["status"] == "succeeded", (body, stack.worker.output()[-3000:])
