"""Real processes for tests: `lookalike` commands as subprocesses, their process trees, signals, and a user.

Fault tolerance is proven here with real processes and real signals: a test starts the
service the way an operator does, kills what the kernel or an orchestrator would kill,
and drives the API over HTTP as a user would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import fixture_bytes, wait_for

BIN = Path(sys.executable).parent / "lookalike"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants, parents first."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        found.append(current)
        todo.extend(children(current))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(state) and not state.startswith("Z")


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Signal a process and every descendant at once, as the OOM killer or a lost machine would."""
    pids = tree(pid)
    for p in pids:
        with suppress(ProcessLookupError):
            os.kill(p, sig)
    wait_for(lambda: not any(alive(p) for p in pids), timeout=30, interval=0.05)
    return pids


def responds(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.1)
        return False


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"lookalike {' '.join(args)}: {done.stderr}"
    return done


class Proc:
    """A `lookalike` command running in the background, its output in a log file."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.args, self.log = args, log
        self.handle = log.open("ab")
        self.popen = subprocess.Popen([str(BIN), *args], env=env, stdout=self.handle, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_tree(self.pid)
                self.popen.wait()
                raise AssertionError(f"lookalike {' '.join(self.args)} did not stop in {timeout}s") from None
        self.handle.close()
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running(env: dict[str, str], log: Path, *args: str) -> Iterator[Proc]:
    proc = Proc(env, log, *args)
    try:
        yield proc
    finally:
        if proc.popen.poll() is None:
            kill_tree(proc.pid)
        proc.handle.close()


def base_env(data_dir: Path, **settings: Any) -> dict[str, str]:
    """The machine's environment without any LOOKALIKE_* from outside, plus these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update(LOOKALIKE_DATA_DIR=str(data_dir), LOOKALIKE_PORT=str(free_port()), LOOKALIKE_LOG_LEVEL="INFO")
    env.update({f"LOOKALIKE_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def api_client(env: dict[str, str]) -> httpx.Client:
    """Migrate, create a user, and return an HTTP client authenticated as them."""
    run(env, "migrate")
    key = run(env, "users", "create", f"u-{uuid.uuid4().hex[:8]}@example.com").stdout.strip()
    base = f"http://127.0.0.1:{env['LOOKALIKE_PORT']}"
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def wait_ready(http: httpx.Client, timeout: float = 90) -> None:
    wait_for(lambda: responds(str(http.base_url.join("/readyz"))), timeout=timeout, interval=0.2)


def ready_subject(http: httpx.Client, names: tuple[str, ...] = ("obama.jpg", "obama2.jpg", "obama3.jpg")) -> str:
    """A subject whose photos are analysed and ready to train (run with LOOKALIKE_MIN_TRAINING_PHOTOS=3)."""
    subject = http.post("/v1/subjects", json={"name": "Barack", "class_word": "man", "consent": True}).json()
    files = [("files", (name, fixture_bytes(name), "image/jpeg")) for name in names]
    assert http.post(f"/v1/subjects/{subject['id']}/photos", files=files).status_code == 202

    def ready() -> bool:
        return http.get(f"/v1/subjects/{subject['id']}/report").json()["ready_to_train"]

    wait_for(ready, timeout=120, interval=0.2)
    return subject["id"]


def training(http: httpx.Client, training_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/trainings/{training_id}")
    assert response.status_code == 200, response.text
    return response.json()


def watch_steps(http: httpx.Client, training_id: str, until: Any, timeout: float, seen: list[int]) -> dict[str, Any]:
    """Poll a training, recording every step it reports, until `until(body)` holds."""

    def check() -> dict[str, Any] | None:
        try:
            body = training(http, training_id)
        except httpx.HTTPError:
            return None  # the API is restarting
        if body["status"] == "training":
            seen.append(body["progress"]["step"])
        return body if until(body) else None

    return wait_for(check, timeout=timeout, interval=0.1)


@contextmanager
def postgres_database(server_url: str, name: str) -> Iterator[str]:
    """A Postgres database `name` of its own on the server at `server_url`, dropped afterwards (connections
    still open to it included); yields its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    from app.core.db import normalize_url

    url = make_url(normalize_url(server_url))
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def purge_redis(url: str, prefix: str) -> None:
    """Delete every Redis key under `prefix` (a test run's, or one test's, key prefix)."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
