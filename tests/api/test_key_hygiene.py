"""API keys never leak: not into the server's log, /metrics, an error body, the database or the data folder.

A real service (`lookalike serve`; `lookalike api` and `worker` on Postgres and Redis when the CI variables
are set) logs at DEBUG while it is used with a valid key, a revoked one, a wrong one, keys in query strings
and paths, failing requests, uploads and a training; the keys the CLI made are then looked for everywhere.
Only `lookalike users create` and `keys create` print a key, once, on stdout: that is their job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import jpeg_bytes, wait_for
from tests.procs import BIN, base_env, postgres_database, ready_subject, responds, running

PG = os.environ.get("LOOKALIKE_TEST_DATABASE_URL")
REDIS = os.environ.get("LOOKALIKE_TEST_REDIS_URL")


def lookalike(env: dict[str, str], *args: str) -> tuple[str, str]:
    """Run a CLI command; (stdout, stderr)."""
    done = subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"lookalike {' '.join(args)}: {done.stderr}"
    return done.stdout, done.stderr


@pytest.fixture
def database() -> Iterator[str | None]:
    """A Postgres database of its own when the CI variables are set; None for the embedded SQLite."""
    if not (PG and REDIS):
        yield None
        return
    with postgres_database(PG, f"lookalike_keys_{uuid.uuid4().hex[:10]}") as url:
        yield url


def dump_database(env: dict[str, str]) -> str:
    """Every row of every table, as text."""
    from app.core.db import make_engine
    from app.core.settings import Settings

    url = Settings(data_dir=Path(env["LOOKALIKE_DATA_DIR"]), database_url=env.get("LOOKALIKE_DATABASE_URL"))
    engine = make_engine(url.resolved_database_url)
    try:
        from sqlalchemy import MetaData

        meta = MetaData()
        meta.reflect(engine)
        lines = []
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                lines += [f"{table.name}: {tuple(row)}" for row in conn.execute(table.select())]
        return "\n".join(lines)
    finally:
        engine.dispose()


def files_under(folder: Path) -> Iterator[tuple[Path, bytes]]:
    for path in folder.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes()


def secret_parts(key: str) -> list[str]:
    """The key, and the part of it that listings never show (all but the displayed prefix)."""
    from app.core.auth import DISPLAY_CHARS

    return [key, key[DISPLAY_CHARS:]]


def test_keys_never_reach_logs_metrics_error_bodies_or_the_database(tmp_path: Path, database: str | None) -> None:
    from app.core.auth import generate_key, hash_key

    extra: dict[str, Any] = {"min_training_photos": 3}
    if database:
        prefix = f"lookalike-keys-{uuid.uuid4().hex[:8]}:"
        extra |= {"database_url": database, "broker_url": REDIS, "broker_key_prefix": prefix}
    env = base_env(tmp_path / "data", **extra)
    env.update(LOOKALIKE_LOG_LEVEL="DEBUG", OMP_NUM_THREADS="1")
    base = f"http://127.0.0.1:{env['LOOKALIKE_PORT']}"
    env["LOOKALIKE_PUBLIC_URL"] = base
    lookalike(env, "migrate")

    # The CLI: the key is printed once, on stdout, by the commands that make one; nowhere else.
    email = f"keys-{uuid.uuid4().hex[:6]}@example.com"
    cli_out: list[str] = []
    out, err = lookalike(env, "users", "create", email)
    key = out.strip()
    cli_out.append(err)
    out, err = lookalike(env, "keys", "create", email, "--name", "laptop")
    revoked = out.strip()
    cli_out.append(err)
    for args in (("keys", "list", email), ("users", "list"), ("keys", "revoke", revoked), ("keys", "list", email)):
        cli_out += lookalike(env, *args)
    wrong = generate_key()  # never issued
    missing = subprocess.run([str(BIN), "keys", "revoke", wrong], env=env, capture_output=True, text=True)
    assert missing.returncode != 0
    cli_out += [missing.stdout, missing.stderr]
    assert key.startswith("lk_") and revoked.startswith("lk_") and key != revoked

    bodies: list[str] = []  # every answer that is not a success
    logs: list[Path] = []
    with ExitStack() as stack:
        if database:
            for name, args in (("api", ("api",)), ("worker", ("worker", "--queues", "cpu,gpu", "--concurrency", "1"))):
                log = tmp_path / f"{name}.log"
                logs.append(log)
                stack.enter_context(running(env, log, *args))
        else:
            log = tmp_path / "serve.log"
            logs.append(log)
            proc = stack.enter_context(running(env, log, "serve"))
        wait_for(lambda: responds(base + "/readyz"), timeout=120, interval=0.2)
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        anonymous = httpx.Client(base_url=base, timeout=30)

        def failing(response: httpx.Response, status: int | None = None) -> None:
            """A refused request (`status`, or any 4xx); its body and headers are kept to look in."""
            ok = response.status_code == status if status else 400 <= response.status_code < 500
            assert ok, f"{response.request.url}: {response.status_code} {response.text}"
            bodies.append(response.text)
            bodies.append(str(response.headers))

        # A subject, photos and a finished training, with the valid key.
        assert http.get("/v1/me").status_code == 200
        subject_id = ready_subject(http)
        body = {"subject_id": subject_id, "name": "me", "base_model": "tiny-sd15", "steps": 4, "resolution": 64}
        started = http.post("/v1/trainings", json=body)
        assert started.status_code == 202, started.text
        upload = http.post("/v1/files", files={"content": ("in.jpg", jpeg_bytes(64, 64), "image/jpeg")})
        assert upload.status_code == 201, upload.text

        # Refused keys, keys where they do not belong, and requests that fail.
        for auth in (f"Bearer {revoked}", f"Bearer {wrong}", f"Basic {key}", key, f"Token {wrong}", f"Bearer {key}x"):
            failing(anonymous.get("/v1/me", headers={"Authorization": auth}), 401)
            failing(anonymous.get("/replicate/v1/account", headers={"Authorization": auth}), 401)
        for name in ("api_key", "key", "token", "access_token"):
            for secret in (key, revoked, wrong):
                # A key in the query string is not a way in, and it is not written down.
                failing(anonymous.get(f"/v1/me?{name}={secret}"), 401)
                failing(anonymous.get(f"/replicate/v1/account?{name}={secret}"), 401)
        assert http.get(f"/v1/subjects?api_key={key}").status_code == 200  # with the header: the query is ignored
        failing(http.get(f"/v1/subjects/{key}"), 422)
        failing(http.get(f"/v1/nowhere/{key}"), 404)
        failing(http.get(f"/replicate/v1/nowhere/{key}"), 404)
        failing(http.get(f"/replicate/v1/predictions/{key}"), 404)
        failing(http.get(f"/replicate/v1/files/{key}"), 404)
        failing(http.get(f"/replicate/v1/models/{key}/face"), 404)
        failing(http.post("/v1/subjects", content=b"{not json", headers={"Content-Type": "application/json"}))
        failing(http.post("/v1/subjects", json={"name": key, "consent": False}))
        failing(http.post("/v1/trainings", json=body), 409)  # one training at a time
        rejected = http.post(f"/v1/subjects/{subject_id}/photos", files=[("files", ("x.jpg", b"nope", "image/jpeg"))])
        assert rejected.status_code == 202 and rejected.json()["rejected"], rejected.text
        bodies.append(rejected.text)
        failing(http.post("/v1/generations", json={"model_id": str(uuid.uuid4()), "prompt": "x"}), 404)
        failing(http.post("/replicate/v1/predictions", json={"version": key, "input": {"prompt": "x"}}), 404)

        def finished() -> dict | None:
            got = http.get(f"/v1/trainings/{started.json()['id']}").json()
            return got if got["status"] in ("succeeded", "failed", "canceled") else None

        done = wait_for(finished, timeout=300, interval=0.5)
        assert done["status"] == "succeeded", done
        assert http.get(f"/v1/models/{done['model_id']}/download").status_code == 200
        metrics = anonymous.get("/metrics")
        assert metrics.status_code == 200 and "lookalike_http_requests_total" in metrics.text

        if database:
            stack.close()
        else:
            proc.stop(signal.SIGINT)

    log_text = "\n".join(path.read_text(errors="replace") for path in logs)
    assert "GET /v1/me" in log_text, "no access log to look in"  # DEBUG: uvicorn's access log is on
    database_text = dump_database(env)
    assert hash_key(key) in database_text and hash_key(revoked) in database_text  # the hashes, not the keys
    places = {
        "the server log": log_text,
        "/metrics": metrics.text,
        "an error body": "\n".join(bodies),
        "the database": database_text,
        "the CLI's other output": "\n".join(cli_out),
    }
    for where, text in places.items():
        for secret in (key, revoked, wrong):
            for part in secret_parts(secret):
                assert part not in text, f"a key is in {where}"
    data = Path(env["LOOKALIKE_DATA_DIR"])
    for path, content in files_under(data):
        for secret in (key, revoked, wrong):
            assert secret_parts(secret)[1].encode() not in content, f"a key is in {path}"
