"""Errors answer RFC 7807 problem details, which the client raises as ReplicateError with our detail."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from replicate.exceptions import ReplicateError

from app.trainings.catalog import gpu_present
from tests.replicate.conftest import TRAINER, Server, photos_zip

FAST = {"num_inference_steps": 2}


def refused(call: Callable[[], Any], status: int) -> str:
    """The detail of the ReplicateError `call` raises, after checking its status."""
    with pytest.raises(ReplicateError) as caught:
        call()
    assert caught.value.status == status, caught.value
    return caught.value.detail or ""


@pytest.mark.usefixtures("trained")
def test_another_users_model_is_not_found(server: Server) -> None:
    bob = server.client("bob")
    assert "alice/face" in refused(lambda: bob.models.get("alice/face"), 404)
    assert "alice/face" in refused(lambda: bob.run("alice/face", input={"prompt": "a portrait"}), 404)
    headers = {"Authorization": f"Bearer {server.keys['bob']}"}
    raw = httpx.get(f"{server.base_url}/v1/models/alice/face", headers=headers)
    assert raw.headers["content-type"] == "application/problem+json"
    assert raw.json() | {"hint": None} == {
        "type": "urn:lookalike:error:model_not_found",
        "title": "Not Found",
        "status": 404,
        "detail": "No model alice/face among yours.",
        "code": "model_not_found",
        "hint": None,
    }


def test_a_refused_prompt_is_a_422_problem(server: Server, version: str) -> None:
    alice = server.client("alice")
    assert "nude" in refused(lambda: alice.run("alice/face", input={"prompt": "a nude portrait", **FAST}), 422)


def test_inputs_the_service_refuses(server: Server, version: str) -> None:
    alice = server.client("alice")

    def run(**input: Any) -> Callable[[], Any]:
        return lambda: alice.run("alice/face", input={"prompt": "a portrait", **input})

    assert "fetches no images" in refused(run(image="https://example.com/me.png"), 422)
    assert refused(run(num_outputs=50), 422).startswith("input.num_outputs:")
    # A LoRA URL on this host's own network is refused before any work is queued.
    assert "LoRA" in refused(run(extra_lora="http://127.0.0.1:9/none.safetensors"), 422)
    hook = "https://example.com/hook"
    assert "Webhooks" in refused(lambda: alice.predictions.create(version=version, input={}, webhook=hook), 422)
    refused(lambda: alice.predictions.create(version="0" * 32, input={"prompt": "x"}), 404)
    refused(lambda: alice.models.get("alice/face").versions.get("f" * 32), 404)


def test_training_requests_the_service_refuses(server: Server, tmp_path: Path) -> None:
    bob = server.client("bob")
    bob.models.create(owner="bob", name="refusals", visibility="private", hardware="cpu")
    archive = photos_zip(tmp_path, ("obama.jpg",))

    def train(version: str = TRAINER, destination: str = "bob/refusals", **input: Any) -> Callable[[], Any]:
        def call() -> Any:
            with archive.open("rb") as fh:
                body = {"input_images": fh, "consent": True, **input}
                return bob.trainings.create(version=version, input=body, destination=destination)

        return call

    assert "consent" in refused(train(consent=False), 422)  # the person's photos need their consent
    assert "consent" in refused(train(consent=None), 422)
    assert "not the current one" in refused(train(consent_version="1999-01-01"), 422)
    assert "bob/missing" in refused(train(destination="bob/missing"), 404)
    assert "owner/name" in refused(train(destination="bob"), 422)
    assert "not a trainer" in refused(train(version="someone/upscaler:abc"), 422)
    assert refused(train(steps=0), 422).startswith("input.steps:")
    assert refused(train(lora_rank=1000), 422).startswith("input.lora_rank:")
    assert "common word" in refused(train(trigger_word="TOK"), 422)
    if not gpu_present():  # training FLUX needs a GPU: refused up front where the embedded worker has none
        assert "GPU" in refused(train(version="ostris/flux-dev-lora-trainer:26dce37a"), 422)
    no_photos = lambda: bob.trainings.create(version=TRAINER, input={"steps": 2}, destination="bob/refusals")  # noqa: E731
    assert "input_images" in refused(no_photos, 422)
