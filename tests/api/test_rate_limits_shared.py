"""Two real `lookalike api` processes sharing one Redis draw on one budget per key."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import pytest

from tests.helpers import fixture_bytes
from tests.procs import api_client, base_env, free_port, purge_redis, running, wait_ready

REDIS_URL = os.environ.get("LOOKALIKE_TEST_REDIS_URL")

pytestmark = pytest.mark.skipif(not REDIS_URL, reason="LOOKALIKE_TEST_REDIS_URL is not set")

PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "chelsea.png")


def test_requests_spread_over_two_api_processes_share_one_budget(tmp_path: Path) -> None:
    prefix = f"lookalike-test-shared-{uuid.uuid4().hex[:8]}:"
    # One database and storage folder (SQLite) for both processes, one Redis; three uploads an hour.
    env = base_env(tmp_path / "data", broker_url=REDIS_URL, broker_key_prefix=prefix, rate_limit_uploads="3/hour")
    other_env = {**env, "LOOKALIKE_PORT": str(free_port())}
    first = api_client(env)
    second = httpx.Client(base_url=f"http://127.0.0.1:{other_env['LOOKALIKE_PORT']}", headers=first.headers, timeout=30)
    try:
        with running(env, tmp_path / "api-1.log", "api"), running(other_env, tmp_path / "api-2.log", "api"):
            wait_ready(first)
            wait_ready(second)
            subject = first.post("/v1/subjects", json={"name": "Barack", "class_word": "man", "consent": True})
            assert subject.status_code == 201, subject.text
            photos_url = f"/v1/subjects/{subject.json()['id']}/photos"

            answers = []
            for index, (http, name) in enumerate(zip((first, second) * 3, PHOTOS, strict=False)):
                files = [("files", (name, fixture_bytes(name), "image/png" if name.endswith("png") else "image/jpeg"))]
                response = http.post(photos_url, files=files)
                answers.append(response.status_code)
                if response.status_code == 429:
                    assert int(response.headers["Retry-After"]) >= 1
                    assert response.json()["error"]["code"] == "rate_limited"
                else:
                    assert response.status_code == 202, (index, response.text)
                    assert response.headers["RateLimit-Remaining"] == str(2 - index)

            # Counted per process, all five would pass: neither process sees more than three of them.
            assert answers == [202, 202, 202, 429, 429]
            listed = second.get(photos_url, params={"limit": 100})
            assert len(listed.json()["items"]) == 3
    finally:
        first.close()
        second.close()
        purge_redis(REDIS_URL, prefix)
