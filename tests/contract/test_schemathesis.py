"""The OpenAPI document is a contract: schemathesis, run as a new user would against `lookalike serve`,
finds no 5xx and no answer the document does not declare (status, content type, body shape, `Allow`).

Two users' keys (a Web Fuzzing Commons auth file), every check schemathesis has, its four phases, a
fixed seed and a bounded number of examples per operation, so a run takes about a minute.
`DELETE /v1/me` is left out: it would delete the user the run signs in as (tests/privacy cover it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.helpers import fixture_bytes
from tests.procs import base_env, run, running, wait_ready

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
EXAMPLES = 10
SEED = 20261206
GENEROUS = "100000/minute"  # rate limits out of the way: 429 is declared, but would hide the other answers


@pytest.mark.slow
def test_the_api_answers_what_its_document_declares(tmp_path: Path) -> None:
    env = base_env(
        tmp_path / "data",
        rate_limit_uploads=GENEROUS,
        rate_limit_trainings=GENEROUS,
        rate_limit_generations=GENEROUS,
        # schemathesis sends a wrong key to every operation to check that it is refused: a 401 it expects.
        rate_limit_sign_in_failures=GENEROUS,
    )
    run(env, "migrate")
    keys = {
        name: run(env, "users", "create", f"{name}-{uuid.uuid4().hex[:6]}@example.com").stdout.strip()
        for name in ("alice", "bob")
    }
    auth = tmp_path / "auth.json"
    auth.write_text(
        json.dumps(
            {
                "auth": [
                    {"name": name, "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {key}"}]}
                    for name, key in keys.items()
                ]
            }
        )
    )
    # Rules JSON Schema cannot state, so a schema-valid request may still be refused (with a worded 422):
    # POST /v1/generations: at most 32 images per request (num_outputs x sweep scales or matrix values),
    # and a LoRA `url` must point to a public host. Only that check is off, only for that operation.
    (tmp_path / "schemathesis.toml").write_text(
        "checks.enabled = true\n"  # every check
        '[[operations]]\ninclude-name = "POST /v1/generations"\nchecks.positive_data_acceptance.enabled = false\n'
    )
    base = f"http://127.0.0.1:{env['LOOKALIKE_PORT']}"
    with running(env, tmp_path / "serve.log", "serve"):
        wait_ready(httpx.Client(base_url=base))
        # Alice has something to find: a subject with a photo (stateful tests follow its ids).
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {keys['alice']}"}, timeout=30) as http:
            subject = http.post("/v1/subjects", json={"name": "A", "class_word": "woman", "consent": True}).json()
            files = [("files", ("obama.jpg", fixture_bytes("obama.jpg"), "image/jpeg"))]
            assert http.post(f"/v1/subjects/{subject['id']}/photos", files=files).status_code == 202
        for user in keys:
            done = subprocess.run(
                [
                    str(SCHEMATHESIS),
                    "run",
                    f"{base}/openapi.json",
                    "--auth-wfc",
                    str(auth),
                    "--auth-wfc-user",
                    user,
                    "--phases",
                    "examples,coverage,fuzzing,stateful",
                    "--max-examples",
                    str(EXAMPLES),
                    "--seed",
                    str(SEED),
                    "--exclude-name",
                    "DELETE /v1/me",
                    "--workers",
                    "1",
                    "--request-timeout",
                    "30",
                    "--no-color",
                ],
                capture_output=True,
                text=True,
                timeout=600,
                cwd=tmp_path,
            )
            output = done.stdout + done.stderr
            assert done.returncode == 0, f"schemathesis as {user}:\n{output[-15000:]}"
            assert "Server error" not in output
