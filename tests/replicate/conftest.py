"""A real `lookalike serve` (API and worker) for the whole run, driven by the official `replicate` client.

A real server rather than the in-process TestClient: the client is an httpx client of its own that
needs a URL, `replicate.run` holds a request open while the worker renders (`Prefer: wait`), and
scripts are meant to run unchanged against REPLICATE_BASE_URL. One server and one trained model
are shared by every test of the package, which keeps the run to a few minutes on a CPU.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import fixture_bytes, wait_for, zip_bytes
from tests.procs import base_env, responds, run, running

PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg")
TRAINER = "lookalike/lora-trainer:tiny-sd15"
FINAL = ("succeeded", "failed", "canceled")
WHO = ("alice", "bob")


@dataclass
class Server:
    url: str  # e.g. http://127.0.0.1:8123
    env: dict[str, str]
    keys: dict[str, str]  # alice and bob
    log: Path

    @property
    def base_url(self) -> str:
        return f"{self.url}/replicate"

    def client(self, who: str) -> Any:
        import replicate

        return replicate.Client(api_token=self.keys[who], base_url=self.base_url)

    def http(self, who: str) -> Any:
        """A plain HTTP client on the native API, as the same user."""
        import httpx

        headers = {"Authorization": f"Bearer {self.keys[who]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("replicate-serve")
    # Three photos suffice for a training here (the default asks for ten).
    # The suite sends more trainings per key (refusals count) than the default 10 an hour; the limit
    # itself is tested in tests/api/test_rate_limits.py.
    env = base_env(data, min_training_photos=3, log_level="INFO", rate_limit_trainings="100/hour")
    url = f"http://127.0.0.1:{env['LOOKALIKE_PORT']}"
    env["LOOKALIKE_PUBLIC_URL"] = url
    # One torch thread per worker process: when other processes compete for a small machine's cores, torch's
    # OpenMP threads were seen to wait on each other so much that the run took 5x longer.
    env["OMP_NUM_THREADS"] = "1"
    run(env, "migrate")
    keys = {
        who: run(env, "users", "create", f"{who}-{uuid.uuid4().hex[:6]}@example.com").stdout.strip()
        for who in ("alice", "bob")
    }
    log = data / "serve.log"
    with running(env, log, "serve") as proc:
        try:
            wait_for(lambda: responds(url + "/readyz"), timeout=90, interval=0.2)
        except AssertionError:
            raise AssertionError(f"the server did not start:\n{proc.output()}") from None
        yield Server(url, env, keys, log)
        proc.stop(signal.SIGINT)


def photos_zip(tmp: Path, names: tuple[str, ...] = PHOTOS, captions: dict[str, bytes] | None = None) -> Path:
    path = tmp / f"photos-{uuid.uuid4().hex[:6]}.zip"
    path.write_bytes(zip_bytes({name: fixture_bytes(name) for name in names} | (captions or {})))
    return path


def wait_final(thing: Any, timeout: float = 180) -> Any:
    """reload() a training or prediction until it has finished."""
    deadline = time.monotonic() + timeout
    while thing.status not in FINAL:
        assert time.monotonic() < deadline, f"still {thing.status} after {timeout}s: {thing.logs}"
        time.sleep(0.5)
        thing.reload()
    return thing


@pytest.fixture(scope="session")
def trained(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """alice/face with one version, trained from a zip through `replicate.trainings.create`."""
    alice = server.client("alice")
    alice.models.create(owner="alice", name="face", visibility="private", hardware="cpu", description="me")
    archive = photos_zip(tmp_path_factory.mktemp("zip"), captions={"obama.txt": b"in a dark suit"})
    with archive.open("rb") as fh:
        training = alice.trainings.create(
            version=TRAINER,
            input={
                "input_images": fh,
                "consent": True,
                "steps": 6,
                "trigger_word": "zorvek",
                "lora_rank": 4,
                "learning_rate": 5e-3,
                "resolution": "64",
                "autocaption": False,
                "seed": 7,
                "optimizer": "adamw8bit",  # one of ostris' inputs: ignored here, with a line in the logs
            },
            destination="alice/face",
        )
    assert training.status == "starting", training
    created = training.dict()
    wait_final(training)
    assert training.status == "succeeded", f"{training.error}\n{training.logs}\n{server.log.read_text()[-3000:]}"
    return {"created": created, "training": training}


@pytest.fixture(scope="session")
def version(trained: dict) -> str:
    """The trained version's id (the Lookalike model id, 32 hex digits)."""
    return trained["training"].output["version"].split(":")[1]
