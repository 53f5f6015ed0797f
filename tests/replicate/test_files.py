"""Files through the official client, and as inputs: a start image (img2img) and an extra LoRA."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
from PIL import Image
from replicate.exceptions import ReplicateError

from tests.helpers import FIXTURES
from tests.replicate.conftest import Server, wait_final

FAST = {"num_inference_steps": 2, "seed": 5}


def test_create_get_list_download_delete(server: Server) -> None:
    bob = server.client("bob")
    path = FIXTURES / "coffee.png"
    created = bob.files.create(path, metadata={"purpose": "start image"})
    assert created.name == "coffee.png" and created.content_type == "image/png"
    assert created.size == path.stat().st_size and created.metadata == {"purpose": "start image"}
    assert len(created.checksums["sha256"]) == 64 and created.urls["get"].endswith(f"/v1/files/{created.id}/download")
    assert bob.files.get(created.id).etag == created.etag
    assert created.id in [f.id for f in bob.files.list()]
    with server.http("bob") as http:
        assert http.get(created.urls["get"]).content == path.read_bytes()
        assert (
            http.get(created.urls["get"], headers={"Authorization": f"Bearer {server.keys['alice']}"}).status_code
            == 404
        )
    assert bob.files.delete(created.id) is True
    with pytest.raises(ReplicateError) as gone:
        bob.files.get(created.id)
    assert gone.value.status == 404


def test_start_image_from_an_open_file_an_uploaded_url_and_a_data_uri(server: Server, version: str) -> None:
    alice = server.client("alice")
    image = FIXTURES / "chelsea.png"
    with image.open("rb") as fh:  # the client uploads it and sends the file's URL
        (first,) = alice.run("alice/face", input={"prompt": "a portrait", "image": fh, "prompt_strength": 0.6, **FAST})
    assert Image.open(io.BytesIO(first.read())).format == "WEBP"

    uploaded = alice.files.create(image)
    prediction = alice.predictions.create(
        version=version, input={"prompt": "a portrait", "image": uploaded.urls["get"], **FAST}, wait=True
    )
    wait_final(prediction)
    assert prediction.status == "succeeded", prediction.error
    assert prediction.input["image"] == uploaded.urls["get"]

    with image.open("rb") as fh:  # file_encoding_strategy="base64": a data URI, stored as a file first
        (third,) = alice.run(
            "alice/face", input={"prompt": "a portrait", "image": fh, **FAST}, file_encoding_strategy="base64"
        )
    assert Image.open(io.BytesIO(third.read())).format == "WEBP"


def test_the_models_own_lora_as_extra_lora(server: Server, version: str, tmp_path: Path) -> None:
    alice = server.client("alice")
    with server.http("alice") as http:
        download = http.get(f"/v1/models/{uuid.UUID(version)}/download", params={"format": "diffusers"})
    assert download.status_code == 200
    lora = tmp_path / "face.safetensors"
    lora.write_bytes(download.content)
    uploaded = alice.files.create(lora)
    prediction = alice.predictions.create(
        version=version,
        input={"prompt": "a portrait", "extra_lora": uploaded.urls["get"], "extra_lora_scale": 0.5, **FAST},
        wait=True,
    )
    wait_final(prediction)
    assert prediction.status == "succeeded", prediction.error
    with server.http("alice") as http:
        generation = http.get(f"/v1/generations/{uuid.UUID(prediction.id)}").json()
    assert [(x["kind"], x["scale"]) for x in generation["loras"]] == [("model", 0.8), ("file", 0.5)]

    # owner/name of one of yours works as extra_lora too.
    (output,) = alice.run("alice/face", input={"prompt": "a portrait", "extra_lora": "alice/face", **FAST})
    assert output.read()
