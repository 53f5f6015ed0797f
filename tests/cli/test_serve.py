"""`lookalike serve` on the embedded defaults: a real server and worker, driven over HTTP, stopped by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess

import httpx
import pytest

from tests.helpers import fixture_bytes, wait_for, zip_bytes
from tests.procs import BIN, alive, children, free_port, responds


@pytest.fixture
def embedded_env(tmp_path):
    """Only the embedded defaults: no database, broker or storage settings from the outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update(
        LOOKALIKE_DATA_DIR=str(tmp_path / "data"), LOOKALIKE_PORT=str(free_port()), LOOKALIKE_LOG_LEVEL="WARNING"
    )
    return env


def test_serve_walkthrough_and_clean_stop(embedded_env):
    """Migrate, create a user, start, upload a zip with captions, see sizes, then Ctrl-C stops API and worker."""
    run = lambda *args: subprocess.run([str(BIN), *args], env=embedded_env, capture_output=True, text=True, timeout=120)  # noqa: E731
    assert run("migrate").returncode == 0
    created = run("users", "create", "walk@example.com")
    assert created.returncode == 0, created.stderr
    headers = {"Authorization": f"Bearer {created.stdout.strip()}"}
    base = f"http://127.0.0.1:{embedded_env['LOOKALIKE_PORT']}"

    server = subprocess.Popen([str(BIN), "serve"], env=embedded_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: responds(base + "/readyz"), timeout=60, interval=0.2)
        worker_pids = children(server.pid)
        assert worker_pids, "serve started no worker process"
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            subject = http.post("/v1/subjects", json={"name": "Barack", "class_word": "man", "consent": True}).json()
            archive = zip_bytes(
                {
                    "obama.jpg": fixture_bytes("obama.jpg"),
                    "obama.txt": b"in a suit",
                    "obama2.jpg": fixture_bytes("obama2.jpg"),
                }
            )
            upload = http.post(f"/v1/subjects/{subject['id']}/photos", files=[("files", ("set.zip", archive))])
            assert upload.status_code == 202, upload.text

            def analyzed():
                items = http.get(f"/v1/subjects/{subject['id']}/photos").json()["items"]
                return items if all(p["status"] == "analyzed" for p in items) else None

            items = wait_for(analyzed, timeout=60, interval=0.2)
        sizes = {p["filename"]: (p["width"], p["height"], p["caption"]) for p in items}
        assert sizes == {"set.zip/obama.jpg": (910, 1137, "in a suit"), "set.zip/obama2.jpg": (626, 1200, None)}
    finally:
        server.send_signal(signal.SIGINT)
        try:
            output = server.communicate(timeout=90)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode == 0, output
    assert "stopped" in output
    # Nothing for an operator to puzzle over: kombu on the embedded broker, setuptools in each pool process.
    assert "No hostname was supplied" not in output and "pkg_resources" not in output
    assert not any(alive(pid) for pid in worker_pids), "the worker outlived serve"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_worker_never_outlives_serve(embedded_env, sig):
    """A stop by SIGTERM (orchestrators) ends the worker too; so does serve being killed outright."""
    assert subprocess.run([str(BIN), "migrate"], env=embedded_env, capture_output=True, timeout=120).returncode == 0
    base = f"http://127.0.0.1:{embedded_env['LOOKALIKE_PORT']}"
    server = subprocess.Popen(
        [str(BIN), "serve"], env=embedded_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: responds(base + "/readyz"), timeout=60, interval=0.2)
        workers = children(server.pid)
        assert workers
        server.send_signal(sig)
        server.wait(timeout=90)
        wait_for(lambda: not any(alive(pid) for pid in workers), timeout=60, interval=0.2)
    finally:
        if server.poll() is None:
            server.kill()
    if sig == signal.SIGTERM:
        assert server.returncode != -signal.SIGTERM, "serve died of the signal instead of stopping its worker"
