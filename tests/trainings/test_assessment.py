"""The assessment stage through the service: samples per kept checkpoint, an honest verdict on a tiny
model, images served to their owner only, and the model-ready email with a sample inline."""

from __future__ import annotations

import email
import email.policy
from typing import Any

from tests.helpers import wait_for
from tests.trainings.test_training_api import start, wait_done


def test_tiny_model_is_assessed_honestly(
    client: Any, account: Any, make_account: Any, ready_subject: dict, settings: Any
) -> None:
    mine = "at the beach, golden hour"
    response = start(client, account, ready_subject["id"], steps=10, name="assessed", validation_prompts=[mine])
    assert response.status_code == 202, response.text
    body = wait_done(client, account, response.json()["id"])
    assert body["status"] == "succeeded", body
    model = client.get(f"/v1/models/{body['model_id']}", headers=account.headers).json()

    quality = model["quality"]
    # Noise has no face: no score is made up, and the advice says why and what to do.
    assert quality["verdict"] == "failed" and quality["score"] is None and quality["identity_similarity"] is None
    assert quality["face_detection_rate"] == 0.0 and "No faces in the samples" in quality["advice"]
    assert [c["step"] for c in quality["checkpoints"]] == [4, 6, 8, 10]  # 40, 60, 80 and 100 % of the steps
    assert quality["chosen_step"] == 10 and quality["held_out_photos"] == 0  # 3 photos: none to spare

    samples = model["samples"]
    per_checkpoint = 4 + 1 + 2  # the fixed subject prompts, the training's own, two without the trigger word
    assert len(samples) == 4 * per_checkpoint
    trigger = body["trigger_word"]
    kinds = {(s["kind"], trigger in s["prompt"]) for s in samples}
    assert kinds == {("subject", True), ("bleed", False)}
    assert any(s["prompt"].endswith(mine) and trigger in s["prompt"] for s in samples)  # trigger word put in
    assert {s["seed"] for s in samples if s["step"] == 4} == {s["seed"] for s in samples if s["step"] == 10}
    assert all(s["chosen"] == (s["step"] == 10) for s in samples)

    for url in (samples[0]["url"], samples[-1]["url"], model["contact_sheet_url"]):
        path = url.removeprefix(settings.public_url.rstrip("/"))
        image = client.get(path, headers=account.headers)
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.content[:2] == b"\xff\xd8"
        other = make_account()
        assert client.get(path, headers=other.headers).status_code == 404  # another user's: not found
        assert client.get(path).status_code == 401
    beyond = client.get(f"/v1/models/{model['id']}/samples/{len(samples)}", headers=account.headers)
    assert beyond.status_code == 404 and beyond.json()["error"]["code"] == "image_not_found"

    # The model-ready email, through the outbox (the embedded default writes .eml files).
    def ready_email() -> Any:
        for path in settings.outbox_dir.glob("*.eml"):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["To"] == account.email and '"assessed"' in message["Subject"]:
                return message
        return None

    message = wait_for(ready_email, timeout=30, interval=0.2)
    text = message.get_body(("plain",)).get_content()
    assert trigger in text and "No faces in the samples" in text and f"/v1/models/{model['id']}" in text
    images = [part for part in message.walk() if part.get_content_type() == "image/jpeg"]
    assert len(images) == 1  # the kept checkpoint's first sample, inline
