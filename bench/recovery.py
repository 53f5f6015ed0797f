"""Time from a worker's death to its training running again, with the default recovery settings.

A tiny-sd15 training (long enough to outlive the measurement) is started, the worker
processes are SIGKILLed at step 300, and the clock runs until the training is running again
on a new worker: claimed (its `attempts` goes up) and then reporting new steps. Two shapes:

- embedded: `lookalike serve` on the defaults (SQLite, filesystem broker). serve starts its
  worker again by itself; the training waits for the lease to go stale and the sweep.
- production: `lookalike api`, `lookalike beat` and `lookalike worker` on Postgres and Redis;
  the worker is started again at once, as an orchestrator's restart policy would.

The baseline, run in the same invocation, is the same kill with the sweep switched off
(what main did before the housekeeping sweep existed): it never recovers, and is cut off
after --baseline-timeout seconds.

Usage: .venv/bin/python bench/recovery.py [--runs 3] [--baseline-timeout 150]
       [--database-url postgresql://postgres@127.0.0.1:5432/test] [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.settings import Settings  # noqa: E402
from tests.procs import Proc, api_client, base_env, children, kill_tree, ready_subject, wait_ready  # noqa: E402
from tests.recovery.conftest import db_row  # noqa: E402

KILL_AT = 300
STEPS = 20_000  # about 7 minutes at 64 px on 2 cores: the run outlives the measurement, then is canceled


def _training(http, subject_id: str) -> str:  # noqa: ANN001
    body = {"subject_id": subject_id, "name": "bench", "base_model": "tiny-sd15", "steps": STEPS, "seed": 1}
    response = http.post("/v1/trainings", json=body)
    response.raise_for_status()
    return response.json()["id"]


def _wait(predicate, timeout: float, interval: float = 0.1):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def _step(http, training_id: str) -> int:  # noqa: ANN001
    try:
        return http.get(f"/v1/trainings/{training_id}").json()["progress"]["step"]
    except Exception:  # noqa: BLE001 - the API may be between processes
        return -1


def measure(http, database_url: str, training_id: str, kill, timeout: float) -> tuple[float | None, float | None]:  # noqa: ANN001
    """Kill at step KILL_AT; seconds until the job is claimed again and until it reports a new step."""
    if not _wait(lambda: _step(http, training_id) >= KILL_AT, 300):
        raise RuntimeError("the training never reached the kill step")
    kill()
    died = time.monotonic()
    attempts = lambda: db_row(database_url, "trainings", training_id, "attempts")["attempts"]  # noqa: E731
    if not _wait(lambda: attempts() >= 2, timeout, 0.05):
        return None, None
    claimed = time.monotonic() - died
    before = _step(http, training_id)
    moved = _wait(lambda: (s := _step(http, training_id)) > 0 and s != before, 120, 0.05)
    return claimed, (time.monotonic() - died) if moved else None


def embedded(tmp: Path, runs: int, timeout: float, sweep: bool) -> list[tuple[float | None, float | None]]:
    results = []
    for run in range(runs):
        data = tmp / f"embedded-{sweep}-{run}"
        extra = {"min_training_photos": 3} | ({} if sweep else {"sweep_interval_s": 10**7})
        env = base_env(data, **extra)
        env["LOOKALIKE_LOG_LEVEL"] = "WARNING"
        http = api_client(env)
        serve = Proc(env, tmp / f"serve-{sweep}-{run}.log", "serve")
        try:
            wait_ready(http)
            training_id = _training(http, ready_subject(http))
            url = f"sqlite:///{data / 'lookalike.db'}"
            kill = lambda: kill_tree(children(serve.pid)[0])  # noqa: B023, E731 - called in this iteration
            results.append(measure(http, url, training_id, kill, timeout))
            http.post(f"/v1/trainings/{training_id}/cancel")
        finally:
            kill_tree(serve.pid)
    return results


def production(
    tmp: Path, runs: int, timeout: float, sweep: bool, pg: str, redis: str
) -> list[tuple[float | None, float | None]]:
    import psycopg
    from sqlalchemy.engine import make_url

    from app.core.db import normalize_url

    server = make_url(normalize_url(pg))
    libpq = server.set(drivername="postgresql").render_as_string(hide_password=False)
    results = []
    for run in range(runs):
        name = f"lookalike_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = server.set(database=name).render_as_string(hide_password=False)
        extra = {"min_training_photos": 3, "database_url": url, "broker_url": redis}
        extra |= {"broker_key_prefix": f"bench-{name}:"} | ({} if sweep else {"sweep_interval_s": 10**7})
        env = base_env(tmp / f"prod-{sweep}-{run}", **extra)
        env["LOOKALIKE_LOG_LEVEL"] = "WARNING"
        http = api_client(env)
        procs = [Proc(env, tmp / f"{n}-{sweep}-{run}.log", *a) for n, a in (("api", ("api",)), ("beat", ("beat",)))]
        worker = Proc(env, tmp / f"worker-{sweep}-{run}.log", "worker", "--queues", "cpu,gpu")
        procs.append(worker)

        def kill_and_restart() -> None:  # called within this iteration
            kill_tree(worker.pid)  # noqa: B023
            procs.append(Proc(env, tmp / f"worker2-{sweep}-{run}.log", "worker", "--queues", "cpu,gpu"))  # noqa: B023

        try:
            wait_ready(http)
            training_id = _training(http, ready_subject(http))
            results.append(measure(http, url, training_id, kill_and_restart, timeout))
            http.post(f"/v1/trainings/{training_id}/cancel")
        finally:
            for proc in procs:
                kill_tree(proc.pid)
            with psycopg.connect(libpq, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return results


def _fmt(values: list[float | None], timeout: float) -> str:
    done = [v for v in values if v is not None]
    if not done:
        return f"not within {timeout:.0f} s"
    text = f"{statistics.median(done):.1f} (min {min(done):.1f}, max {max(done):.1f})"
    return text + (f", {len(values) - len(done)} never" if len(done) < len(values) else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-timeout", type=float, default=150.0)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--skip-production", action="store_true")
    args = parser.parse_args()
    defaults = Settings()
    bound = defaults.training_lease_s + defaults.sweep_interval_s
    print(
        f"commit {_commit()}; defaults: lease {defaults.training_lease_s:.0f} s, heartbeat "
        f"{defaults.training_heartbeat_s:.0f} s, sweep every {defaults.sweep_interval_s:.0f} s "
        f"(a dead worker's job is handed on within lease + interval = {bound:.0f} s of its last heartbeat)"
    )
    tmp = Path(tempfile.mkdtemp(prefix="lookalike-recovery-"))
    rows = []
    try:
        shapes = [("embedded (serve)", lambda s, n, t: embedded(tmp, n, t, s))]
        if not args.skip_production:
            shapes.append(
                ("Postgres + Redis", lambda s, n, t: production(tmp, n, t, s, args.database_url, args.redis_url))
            )
        for label, run in shapes:
            ours = run(True, args.runs, 300.0)
            base = run(False, 1, args.baseline_timeout)
            rows.append((label, "sweep (this commit)", ours, 300.0))
            rows.append((label, "no sweep (baseline)", base, args.baseline_timeout))
            print(f"  {label}: done", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| shape | recovery | runs | death to claimed again (s) | death to new steps (s) |")
    print("|---|---|---|---|---|")
    for label, kind, results, timeout in rows:
        claimed = [c for c, _ in results]
        moving = [m for _, m in results]
        print(f"| {label} | {kind} | {len(results)} | {_fmt(claimed, timeout)} | {_fmt(moving, timeout)} |")
    return 0


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
