"""Trainings through the API, on the tiny presets, with the real worker: the way a user runs them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load as load_tensors

from tests.helpers import wait_for


def start(client: Any, account: Any, subject_id: str, **extra: Any) -> Any:
    body = {"subject_id": subject_id, "name": "portrait", "base_model": "tiny-sd15", "steps": 6, "seed": 7} | extra
    return client.post("/v1/trainings", json=body, headers=account.headers)


def wait_done(client: Any, account: Any, training_id: str, timeout: float = 120) -> dict:
    def done() -> dict | None:
        body = client.get(f"/v1/trainings/{training_id}", headers=account.headers).json()
        return body if body["status"] in ("succeeded", "failed", "canceled") else None

    return wait_for(done, timeout=timeout, interval=0.2)


def denoiser_output_changes(family: str, model_dir: Path, lora: bytes, tmp_path: Path) -> float:
    """Load `lora` with diffusers' load_lora_weights and return how much it moves a 2-step image."""
    import diffusers

    pipeline = {"sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline", "flux": "FluxPipeline"}[family]
    pipe = getattr(diffusers, pipeline).from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "lora.safetensors").write_bytes(lora)

    def image() -> Any:
        generator = torch.Generator().manual_seed(0)
        return pipe("a photo", num_inference_steps=2, height=64, width=64, output_type="np", generator=generator).images

    before = image()
    pipe.load_lora_weights(str(tmp_path), weight_name="lora.safetensors")
    return float(abs(image() - before).max())


@pytest.mark.parametrize("preset", ["tiny-sd15", "tiny-sdxl", "tiny-flux"])
def test_full_training_on_each_tiny_preset(
    client: Any, account: Any, ready_subject: dict, settings: Any, storage: Any, db: Any, tmp_path: Path, preset: str
) -> None:
    response = start(client, account, ready_subject["id"], base_model=preset, steps=12, learning_rate=5e-3)
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["status"] == "queued" and created["family"] == preset.split("-")[1]
    assert created["trigger_word"] and created["settings"]["steps"] == 12
    assert "noise" in created["notice"]  # tiny models say so

    body = wait_done(client, account, created["id"])
    assert body["status"] == "succeeded", body
    assert body["progress"]["step"] == body["progress"]["total_steps"] == 12
    assert body["progress"]["percent"] == 100.0 and body["progress"]["loss"] > 0
    assert set(body["phases"]) == {"preparing", "training", "assessing", "succeeded"}
    assert body["phases"]["succeeded"] >= body["phases"]["assessing"]
    assert body["started_at"] and body["finished_at"] and body["model_id"]

    model = client.get(f"/v1/models/{body['model_id']}", headers=account.headers).json()
    assert model["trigger_word"] == body["trigger_word"] and model["base_model"] == preset
    assert {f["format"] for f in model["files"]} == {"diffusers", "kohya"} and "noise" in model["notice"]
    files = {}
    for fmt in ("diffusers", "kohya"):
        download = client.get(f"/v1/models/{model['id']}/download", params={"format": fmt}, headers=account.headers)
        assert download.status_code == 200
        assert "attachment" in download.headers["content-disposition"]
        files[fmt] = download.content
        tensors = load_tensors(download.content)
        prefix = ("transformer." if preset == "tiny-flux" else "unet.") if fmt == "diffusers" else "lora_unet_"
        assert tensors and all(k.startswith(prefix) for k in tensors)
    from safetensors import safe_open

    with safe_open(_to_file(tmp_path / "k.safetensors", files["kohya"]), "pt") as fh:
        meta = fh.metadata()
    assert meta["modelspec.trigger_phrase"] == body["trigger_word"] and meta["lookalike.base_model"] == preset
    assert json.loads(meta["lookalike.training"])["steps"] == 12

    # Both files load in diffusers and change what the denoiser draws (kohya FLUX: see test_export).
    model_dir = settings.resolved_models_dir / preset
    assert denoiser_output_changes(model["family"], model_dir, files["diffusers"], tmp_path / "d") > 1e-4
    if preset != "tiny-flux":
        assert denoiser_output_changes(model["family"], model_dir, files["kohya"], tmp_path / "k") > 1e-4

    # The cache and checkpoints were only for this run.
    assert storage.list(f"users/{account.id}/trainings/{created['id']}/") == []
    listed = client.get("/v1/models", headers=account.headers).json()["items"]
    assert [m["id"] for m in listed] == [model["id"]]


def _to_file(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def test_events_stream_status_and_progress(client: Any, account: Any, ready_subject: dict) -> None:
    created = start(client, account, ready_subject["id"], steps=30).json()
    events = []
    with client.stream("GET", f"/v1/trainings/{created['id']}/events", headers=account.headers) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: ") and kind:
                events.append((kind, json.loads(line[len("data: ") :])))
    statuses = [body["status"] for kind, body in events if kind == "status"]
    assert statuses[-1] == "succeeded"
    assert statuses == sorted(set(statuses), key=statuses.index)  # each status once, in order
    assert set(statuses) <= {"queued", "preparing", "training", "assessing", "succeeded"}
    assert events[-1][1]["progress"]["step"] == 30


def test_subject_not_ready(client: Any, account: Any, subject: dict) -> None:
    response = start(client, account, subject["id"])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "subject_not_ready" and error["hint"]
    assert [p["code"] for p in error["problems"]] == ["not_enough_photos"]
    assert client.get("/v1/trainings", headers=account.headers).json()["items"] == []


def test_second_training_conflicts_then_cancel(client: Any, account: Any, ready_subject: dict, storage: Any) -> None:
    first = start(client, account, ready_subject["id"], steps=5000).json()
    second = start(client, account, ready_subject["id"])
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "training_in_progress"
    assert second.json()["error"]["training_id"] == first["id"]

    # Cancel once it is really training: it stops within seconds and cleans up.
    wait_for(
        lambda: client.get(f"/v1/trainings/{first['id']}", headers=account.headers).json()["progress"]["step"] > 0,
        timeout=60,
    )
    canceled = client.post(f"/v1/trainings/{first['id']}/cancel", headers=account.headers)
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    prefix = f"users/{account.id}/trainings/{first['id']}/"
    wait_for(lambda: storage.list(prefix) == [], timeout=10)  # the worker has stopped and cleaned up
    step = client.get(f"/v1/trainings/{first['id']}", headers=account.headers).json()["progress"]["step"]
    assert 0 < step < 5000
    again = client.post(f"/v1/trainings/{first['id']}/cancel", headers=account.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "training_finished"
    assert "canceled" in client.get(f"/v1/trainings/{first['id']}", headers=account.headers).json()["phases"]

    # The user may train again; the next run's trigger word differs (unique per user), and the word in
    # the answer is the one the finished model carries.
    third = start(client, account, ready_subject["id"], steps=2)
    assert third.status_code == 202, third.text
    assert third.json()["trigger_word"] != first["trigger_word"]
    finished = wait_done(client, account, third.json()["id"])
    assert finished["status"] == "succeeded" and finished["trigger_word"] == third.json()["trigger_word"]
    model = client.get(f"/v1/models/{finished['model_id']}", headers=account.headers).json()
    assert model["trigger_word"] == third.json()["trigger_word"]


def test_base_model_that_cannot_be_loaded_fails_clearly(
    client: Any, account: Any, ready_subject: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.trainings import catalog

    # In embedded mode a GPU-less machine refuses full-size models up front (gpu_required, tested apart);
    # pretend there is one, so that the job reaches the worker and the load itself fails.
    monkeypatch.setattr(catalog, "gpu_present", lambda: True)
    created = start(client, account, ready_subject["id"], base_model="lookalike-tests/no-such-model").json()
    body = wait_done(client, account, created["id"])
    assert body["status"] == "failed"
    assert body["error"]["code"] == "base_model_unavailable"
    assert "Traceback" not in json.dumps(body["error"]) and body["error"]["hint"]
    # Self-contained: nothing that points at a log or stack trace the user cannot see.
    assert not any(word in json.dumps(body["error"]).lower() for word in ("stacktrace", "above", "detail:"))


def test_bad_requests(client: Any, account: Any, ready_subject: dict, make_account: Any) -> None:
    cases = [
        ({"base_model": "not a model!"}, "unknown_base_model"),
        ({"base_model": "/nowhere/at/all"}, "unknown_base_model"),
        ({"steps": 0}, "invalid_input"),
        ({"resolution": 500}, "invalid_input"),
        ({"learning_rate": 1.0}, "invalid_input"),
        ({"trigger_word": "photo"}, "trigger_word_common"),
        ({"trigger_word": "has space"}, "invalid_input"),
        ({"webhook_events": ["training.exploded"]}, "invalid_input"),
        ({"surprise": 1}, "invalid_input"),
    ]
    for extra, code in cases:
        response = start(client, account, ready_subject["id"], **extra)
        assert response.status_code == 422, (extra, response.text)
        assert response.json()["error"]["code"] == code, (extra, response.json())

    stranger = make_account()
    assert start(client, stranger, ready_subject["id"]).status_code == 404
    created = start(client, account, ready_subject["id"], steps=2).json()
    for path in ("", "/events"):
        assert client.get(f"/v1/trainings/{created['id']}{path}", headers=stranger.headers).status_code == 404
    assert client.post(f"/v1/trainings/{created['id']}/cancel", headers=stranger.headers).status_code == 404
    body = wait_done(client, account, created["id"])
    assert client.get(f"/v1/models/{body['model_id']}", headers=stranger.headers).status_code == 404
    assert client.get(f"/v1/models/{body['model_id']}/download", headers=stranger.headers).status_code == 404


def test_delete_model_removes_its_files(client: Any, account: Any, ready_subject: dict, storage: Any) -> None:
    created = start(client, account, ready_subject["id"], steps=2).json()
    model_id = wait_done(client, account, created["id"])["model_id"]
    assert storage.list(f"users/{account.id}/models/{model_id}/")
    assert client.delete(f"/v1/models/{model_id}", headers=account.headers).status_code == 204
    assert storage.list(f"users/{account.id}/models/{model_id}/") == []
    assert client.get(f"/v1/models/{model_id}", headers=account.headers).status_code == 404
    # The training stays, pointing at a model that is gone.
    assert client.get(f"/v1/trainings/{created['id']}", headers=account.headers).status_code == 200
