"""/v1/generations, /v1/models/{id}/image and /v1/files, driven over HTTP with the in-process worker.

The model under test is a LoRA exported from the tiny SD1.5 preset's UNet with random weights (what a
training ships, without spending a training on it); its images are noise, which is all these tests need.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import func, select

from tests.helpers import fixture_bytes, insert_model, wait_for

WAIT = {"Prefer": "wait=60"}


@pytest.fixture
def lora_model(settings: Any, storage: Any, account: Any, make_lora: Any) -> dict[str, Any]:
    """A tiny-sd15 model of `account`'s, as a finished training leaves it (row and file)."""
    model_id, key = insert_model(settings, storage, account.id, make_lora("sd15", strength=4.0))
    return {"id": str(model_id), "key": key}


def _image(client: Any, account: Any, url: str) -> Image.Image:
    response = client.get(url.removeprefix("http://127.0.0.1:8000"), headers=account.headers)
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def test_generate_and_wait_answers_the_outputs(client: Any, account: Any, lora_model: dict) -> None:
    body = {"model_id": lora_model["id"], "prompt": "portrait, studio light", "num_outputs": 2, "seed": 7}
    response = client.post("/v1/generations", json=body, headers=account.headers | WAIT)
    assert response.status_code == 201, response.text
    assert response.headers["Preference-Applied"] == "wait=60"
    generation = response.json()
    assert generation["status"] == "succeeded", generation
    assert generation["trigger_word_inserted"] is True
    assert generation["prompt"] == "zorvek person, portrait, studio light"
    assert generation["notice"] and "noise" in generation["notice"]
    assert [o["seed"] for o in generation["outputs"]] == [7, 8]
    assert generation["settings"]["num_inference_steps"] == 4 and generation["settings"]["lora_scale"] == 0.8
    assert generation["metrics"]["predict_time"] > 0
    images = [_image(client, account, o["url"]) for o in generation["outputs"]]
    assert [(im.format, im.size) for im in images] == [("WEBP", (64, 64))] * 2
    assert images[0].tobytes() != images[1].tobytes()  # two seeds, two images

    again = client.post("/v1/generations", json=body | {"num_outputs": 1}, headers=account.headers | WAIT).json()
    first = _image(client, account, again["outputs"][0]["url"])
    assert first.tobytes() == images[0].tobytes()  # same seed, same image


def test_without_wait_it_answers_202_then_finishes(client: Any, account: Any, lora_model: dict) -> None:
    body = {"model_id": lora_model["id"], "prompt": "zorvek on a boat", "aspect_ratio": "16:9", "output_format": "png"}
    response = client.post("/v1/generations", json=body, headers=account.headers)
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["status"] in ("queued", "running") and created["trigger_word_inserted"] is False
    assert response.headers["Location"] == f"/v1/generations/{created['id']}"

    def finished() -> dict | None:
        got = client.get(f"/v1/generations/{created['id']}", headers=account.headers).json()
        return got if got["status"] == "succeeded" else None

    done = wait_for(finished, timeout=60)
    image = _image(client, account, done["outputs"][0]["url"])
    assert image.format == "PNG" and image.size == (88, 48)  # 16:9 at 64x64's area, multiples of 8
    listed = client.get("/v1/generations", headers=account.headers).json()
    assert [g["id"] for g in listed["items"]] == [created["id"]]


def test_lora_strength_sweep_and_prompt_matrix_come_with_a_contact_sheet(
    client: Any, account: Any, lora_model: dict
) -> None:
    sweep = {"model_id": lora_model["id"], "prompt": "zorvek portrait", "seed": 3, "sweep": {}}
    done = client.post("/v1/generations", json=sweep, headers=account.headers | WAIT).json()
    assert done["status"] == "succeeded" and done["kind"] == "sweep"
    assert [o["label"] for o in done["outputs"]] == ["0", "0.2", "0.4", "0.6", "0.8", "1", "1.2"]
    assert {o["seed"] for o in done["outputs"]} == {3}
    pixels = [_image(client, account, o["url"]).tobytes() for o in done["outputs"]]
    assert len(set(pixels)) == len(pixels)  # every strength changes the image
    sheet = _image(client, account, done["contact_sheet_url"])
    assert sheet.format == "JPEG" and sheet.width > 7 * 64

    matrix = {
        "model_id": lora_model["id"],
        "prompt": "zorvek at age {age}",
        "seed": 5,
        "matrix": {"name": "age", "values": ["20", "50", "80"]},
    }
    done = client.post("/v1/generations", json=matrix, headers=account.headers | WAIT).json()
    assert done["status"] == "succeeded" and done["kind"] == "matrix"
    assert [o["prompt"] for o in done["outputs"]] == [f"zorvek at age {a}" for a in (20, 50, 80)]
    assert _image(client, account, done["contact_sheet_url"]).format == "JPEG"


def test_model_image_answers_the_image_itself(client: Any, account: Any, lora_model: dict) -> None:
    response = client.post(
        f"/v1/models/{lora_model['id']}/image", json={"prompt": "zorvek", "seed": 1}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png" and response.headers["X-Seed"] == "1"
    assert Image.open(io.BytesIO(response.content)).size == (64, 64)


def test_img2img_from_an_uploaded_image_and_a_photo_id(client: Any, account: Any, lora_model: dict) -> None:
    upload = client.post(
        "/v1/files", files={"content": ("start.jpg", fixture_bytes("obama.jpg"), "image/jpeg")}, headers=account.headers
    )
    assert upload.status_code == 201, upload.text
    assert upload.json()["kind"] == "image"
    body = {"model_id": lora_model["id"], "prompt": "zorvek", "image": upload.json()["id"], "prompt_strength": 0.5}
    done = client.post("/v1/generations", json=body, headers=account.headers | WAIT).json()
    assert done["status"] == "succeeded", done
    assert done["settings"]["prompt_strength"] == 0.5


def test_requests_are_refused_before_any_gpu_work(
    client: Any, account: Any, make_account: Any, lora_model: dict, make_lora: Any, db: Any
) -> None:
    from app.db import Generation

    def refused(body: dict, status: int, code: str, headers: dict | None = None) -> dict:
        response = client.post("/v1/generations", json=body, headers=account.headers if headers is None else headers)
        assert response.status_code == status, response.text
        if code:
            assert response.json()["error"]["code"] == code, response.text
        return response.json()

    model = lora_model["id"]
    error = refused({"model_id": model, "prompt": "zorvek, nude"}, 422, "prompt_refused")["error"]
    assert "sexual content" in error["message"]
    refused({"model_id": model, "prompt": "zorvek as a 10 year old"}, 422, "prompt_refused")
    other = make_account()
    refused({"model_id": model, "prompt": "zorvek"}, 404, "model_not_found", other.headers)
    refused({"model_id": model, "prompt": "zorvek"}, 401, "", {})
    refused({"model_id": model, "prompt": "zorvek", "num_outputs": 9}, 422, "")
    refused(
        {"model_id": model, "prompt": "x {age}", "num_outputs": 8, "matrix": {"name": "age", "values": ["1"] * 5}},
        422,
        "too_many_images",
    )
    refused({"model_id": model, "prompt": "zorvek", "base_model": "tiny-sdxl"}, 422, "lora_family_mismatch")
    refused(
        {"loras": [{"url": "http://127.0.0.1:9/x.safetensors"}], "prompt": "p", "base_model": "tiny-sd15"},
        422,
        "lora_url_refused",
    )
    refused(
        {"loras": [{"file_id": str(uuid.uuid4())}], "prompt": "p", "base_model": "tiny-sd15"}, 404, "file_not_found"
    )

    sdxl = client.post(
        "/v1/files",
        files={"content": ("style.safetensors", make_lora("sdxl"), "application/octet-stream")},
        headers=account.headers,
    ).json()
    assert sdxl["kind"] == "lora" and sdxl["metadata"]["family"] == "sdxl"
    body = {"model_id": model, "loras": [{"file_id": sdxl["id"], "scale": 0.5}], "prompt": "zorvek"}
    error = refused(body, 422, "lora_family_mismatch")["error"]
    assert "SDXL" in error["message"] and "SD1.5" in error["message"]
    assert db.scalar(select(func.count()).select_from(Generation)) == 0


def test_two_loras_together_and_outputs_are_their_owners_only(
    client: Any, account: Any, make_account: Any, lora_model: dict, make_lora: Any
) -> None:
    style = client.post(
        "/v1/files",
        files={"content": ("style.safetensors", make_lora("sd15", seed=9, fmt="kohya"), "application/octet-stream")},
        headers=account.headers,
    ).json()
    body = {"model_id": lora_model["id"], "loras": [{"file_id": style["id"], "scale": 0.6}], "prompt": "zorvek"}
    done = client.post("/v1/generations", json=body, headers=account.headers | WAIT).json()
    assert done["status"] == "succeeded", done
    assert [(x["kind"], x["scale"]) for x in done["loras"]] == [("model", 0.8), ("file", 0.6)]

    other = make_account()
    path = done["outputs"][0]["url"].removeprefix("http://127.0.0.1:8000")
    assert client.get(path, headers=other.headers).status_code == 404
    assert client.get(f"/v1/generations/{done['id']}", headers=other.headers).status_code == 404
    assert client.get(f"/v1/files/{style['id']}/content", headers=other.headers).status_code == 404
    assert client.post(f"/v1/generations/{done['id']}/cancel", headers=other.headers).status_code == 404
    finished = client.post(f"/v1/generations/{done['id']}/cancel", headers=account.headers)
    assert finished.status_code == 409 and finished.json()["error"]["code"] == "generation_finished"


def test_files_refuse_what_is_not_a_lora(client: Any, account: Any) -> None:
    import struct

    header = b'{"weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    not_lora = struct.pack("<Q", len(header)) + header + b"\0\0\0\0"
    response = client.post(
        "/v1/files",
        files={"content": ("full.safetensors", not_lora, "application/octet-stream")},
        headers=account.headers,
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "not_a_lora"
    broken = client.post(
        "/v1/files",
        files={"content": ("x.safetensors", b"\xff" * 64, "application/octet-stream")},
        headers=account.headers,
    )
    assert broken.status_code == 422 and broken.json()["error"]["code"] == "invalid_safetensors"
    assert client.get("/v1/files", headers=account.headers).json()["items"] == []
