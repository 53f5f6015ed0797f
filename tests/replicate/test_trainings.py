"""Models and trainings through the official client: a zip of photos in, a version of the destination out."""

from __future__ import annotations

import re

import pytest
from replicate.exceptions import ReplicateError

from tests.helpers import FIXTURES
from tests.replicate.conftest import TRAINER, Server, photos_zip, wait_final


def test_models_create_and_get(server: Server) -> None:
    bob = server.client("bob")
    created = bob.models.create(owner="bob", name="portraits", visibility="private", hardware="gpu-a100-large")
    assert (created.owner, created.name, created.visibility, created.run_count) == ("bob", "portraits", "private", 0)
    assert created.latest_version is None and created.url.endswith("/replicate/v1/models/bob/portraits")
    got = bob.models.get("bob/portraits")
    assert got.id == "bob/portraits" and got.description is None

    with pytest.raises(ReplicateError) as taken:
        bob.models.create(owner="bob", name="portraits", visibility="private", hardware="cpu")
    assert taken.value.status == 409 and "already have" in taken.value.detail


def test_training_from_a_zip_becomes_a_version(server: Server, trained: dict) -> None:
    created, training = trained["created"], trained["training"]
    assert created["model"] == "lookalike/lora-trainer" and created["version"] == "tiny-sd15"
    assert created["destination"] == "alice/face"
    assert created["input"]["input_images"].startswith(f"{server.base_url}/v1/files/")  # the client uploaded the zip

    assert re.fullmatch(r"alice/face:[0-9a-f]{32}", training.output["version"])
    assert training.destination == "alice/face"
    assert training.output["weights"].startswith(f"{server.url}/v1/models/")
    assert training.started_at and training.completed_at and training.error is None
    assert "Ignored unknown input: optimizer" in training.logs
    assert "Photos accepted from input_images: 3" in training.logs
    assert "6/6" in training.logs and "zorvek" in training.logs

    alice = server.client("alice")
    model = alice.models.get("alice/face")
    version_id = training.output["version"].split(":")[1]
    assert model.latest_version is not None and model.latest_version.id == version_id
    schema = model.latest_version.openapi_schema["components"]["schemas"]
    assert "prompt" in schema["Input"]["properties"] and schema["Output"]["items"]["format"] == "uri"
    assert [v.id for v in model.versions.list()] == [version_id]
    assert model.versions.get(version_id).cog_version
    assert training.id in [t.id for t in alice.trainings.list()]
    assert alice.trainings.get(training.id).status == "succeeded"

    # The native API sees the same training and model: autocaption off, the .txt caption kept.
    with server.http("alice") as http:
        native = http.get(f"/v1/trainings/{training.id}").json()
        assert native["settings"]["autocaption"] is False and native["trigger_word"] == "zorvek"
        assert native["model_id"].replace("-", "") == version_id
        photos = http.get(f"/v1/subjects/{native['subject_id']}/photos").json()["items"]
        captions = {p["filename"].rsplit("/", 1)[-1]: p["caption"] for p in photos}
        assert captions == {"obama.jpg": "in a dark suit", "obama2.jpg": None, "obama3.jpg": None}


def test_training_whose_photos_are_not_ready_fails_after_analysis(server: Server, tmp_path) -> None:
    bob = server.client("bob")
    bob.models.create(owner="bob", name="solo", visibility="private", hardware="cpu")
    with photos_zip(tmp_path, ("obama.jpg",)).open("rb") as fh:
        training = bob.trainings.create(
            version=TRAINER, input={"input_images": fh, "steps": 2, "consent": True}, destination="bob/solo"
        )
    assert training.status == "starting"
    wait_final(training, timeout=120)
    assert training.status == "failed"
    assert "not ready" in training.error and training.output is None


def test_cancel_a_training_waiting_for_its_photos(server: Server) -> None:
    bob = server.client("bob")
    bob.models.create(owner="bob", name="canceled", visibility="private", hardware="cpu")
    with (FIXTURES / "obama2.jpg").open("rb") as fh:  # one photo, not a zip: a subject of one
        training = bob.trainings.create(
            version=TRAINER, input={"input_images": fh, "consent": True}, destination="bob/canceled"
        )
    assert "Photos accepted from input_images: 1" in training.logs
    training.cancel()
    assert training.status == "canceled"
    assert bob.trainings.cancel(training.id).status == "canceled"  # canceling again answers it as it is
    assert bob.trainings.get(training.id).status == "canceled"
