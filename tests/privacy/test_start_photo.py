"""An img2img generation started from one of a subject's photos holds a copy of that face (its start image)
and images made from it: deleting the photo, or its subject, deletes the generation, row and stored objects.
A generation started from an uploaded file (POST /v1/files) is not the photo's and stays."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from app.core.keys import generation_prefix, user_prefix
from app.db import Generation
from tests.helpers import insert_model, jpeg_bytes, wait_for, wait_until_analyzed
from tests.privacy.conftest import WAIT, upload_file


@pytest.fixture
def lora(settings: Any, storage: Any, account: Any, make_lora: Any) -> str:
    """A tiny-sd15 model of the account's that belongs to no subject: only the start image ties a generation
    to the person."""
    model_id, _ = insert_model(settings, storage, account.id, make_lora("sd15"))
    return str(model_id)


def _photos(client: Any, account: Any, subject_id: str, n: int) -> list[str]:
    files = [("files", (f"face{i}.jpg", jpeg_bytes(color=(40 * i, 90, 200)), "image/jpeg")) for i in range(n)]
    response = client.post(f"/v1/subjects/{subject_id}/photos", files=files, headers=account.headers)
    assert response.status_code == 202, response.text
    wait_until_analyzed(client, account, subject_id, n)
    return [p["id"] for p in response.json()["photos"]]


def _generate(client: Any, account: Any, lora: str, image: str, **extra: Any) -> dict[str, Any]:
    """An img2img generation from `image` (a photo or file id), the fewest denoising steps (2 at strength 0.5)."""
    body = {"model_id": lora, "prompt": "portrait", "image": image, "prompt_strength": 0.5, "num_inference_steps": 2}
    response = client.post("/v1/generations", json=body | extra, headers=account.headers | WAIT)
    assert response.status_code == 201 and response.json()["status"] == "succeeded", response.text
    return response.json()


def _stored(storage: Any, account: Any, generation_id: str) -> list[str]:
    """Every stored object of the user's that names the generation."""
    return [k for k in storage.list(user_prefix(account.id)) if generation_id in k]


def _gone(client: Any, account: Any, storage: Any, db: Any, generation_id: str) -> None:
    assert client.get(f"/v1/generations/{generation_id}", headers=account.headers).status_code == 404
    db.expire_all()
    assert db.scalar(select(Generation).where(Generation.id == uuid.UUID(generation_id))) is None
    assert _stored(storage, account, generation_id) == []


def _kept(client: Any, account: Any, storage: Any, generation: dict[str, Any]) -> None:
    h = account.headers
    assert client.get(f"/v1/generations/{generation['id']}", headers=h).status_code == 200
    output = generation["outputs"][0]["url"].split("8000", 1)[-1]
    assert client.get(output, headers=h).status_code == 200
    stored = _stored(storage, account, generation["id"])
    assert any("/input." in k for k in stored) and any("/output-" in k for k in stored), stored


def test_deleting_the_subject_takes_the_generations_started_from_its_photos(
    client: Any, account: Any, subject: dict, storage: Any, db: Any, lora: str
) -> None:
    (photo,) = _photos(client, account, subject["id"], 1)
    from_photo = _generate(client, account, lora, photo)
    from_file = _generate(client, account, lora, upload_file(client, account))
    _kept(client, account, storage, from_photo)  # the start image and the output are there before

    response = client.delete(f"/v1/subjects/{subject['id']}", headers=account.headers)
    assert response.status_code == 204, response.text

    _gone(client, account, storage, db, from_photo["id"])
    _kept(client, account, storage, from_file)
    assert client.get(f"/v1/models/{lora}", headers=account.headers).status_code == 200


def test_deleting_a_photo_takes_the_generations_started_from_it(
    client: Any, account: Any, subject: dict, storage: Any, db: Any, lora: str
) -> None:
    deleted, other = _photos(client, account, subject["id"], 2)
    from_deleted = [_generate(client, account, lora, deleted, seed=s) for s in (1, 2)]
    from_other = _generate(client, account, lora, other)
    from_file = _generate(client, account, lora, upload_file(client, account))
    for generation in from_deleted:
        _kept(client, account, storage, generation)

    url = f"/v1/subjects/{subject['id']}/photos/{deleted}"
    assert client.delete(url, headers=account.headers).status_code == 204

    assert client.get(url, headers=account.headers).status_code == 404
    for generation in from_deleted:
        _gone(client, account, storage, db, generation["id"])
    for generation in (from_other, from_file):
        _kept(client, account, storage, generation)
    photos = client.get(f"/v1/subjects/{subject['id']}/photos", headers=account.headers).json()["items"]
    assert [p["id"] for p in photos] == [other]


def test_deleting_a_photo_stops_a_running_generation_started_from_it(
    client: Any, account: Any, subject: dict, storage: Any, db: Any, lora: str, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="worker.generation.tasks")
    (photo,) = _photos(client, account, subject["id"], 1)
    body = {"model_id": lora, "prompt": "portrait", "image": photo, "num_outputs": 8, "num_inference_steps": 100}
    started = client.post("/v1/generations", json=body, headers=account.headers)
    assert started.status_code == 202, started.text
    generation_id = started.json()["id"]
    prefix = generation_prefix(account.id, uuid.UUID(generation_id))
    # Running, with its first image written: the rest is still to come when the photo goes.
    wait_for(lambda: any("/output-" in k for k in storage.list(prefix)), timeout=120, interval=0.05)

    url = f"/v1/subjects/{subject['id']}/photos/{photo}"
    assert client.delete(url, headers=account.headers).status_code == 204

    # One worker runs one job at a time: once the next generation has run, the deleted one has stopped
    # and removed what it wrote after the deletion.
    following = _generate(client, account, lora, upload_file(client, account))
    _gone(client, account, storage, db, generation_id)
    assert storage.list(prefix) == []
    _kept(client, account, storage, following)
    assert f"generation.run {generation_id}: canceled" in caplog.text  # it was stopped, not finished
